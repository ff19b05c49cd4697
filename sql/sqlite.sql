-- mod_aiprov schema for SQLite (3.38 or later: the default session query uses unixepoch()).
-- Timestamps are unix seconds, as the original implementation stores them.
-- Load with: sqlite3 /path/to/aiprov.db < sql/sqlite.sql
-- foreign_keys, secure_delete and busy_timeout are per connection: mod_aiprov
-- sets them on every connection it gets from mod_dbd. WAL is kept in the file.
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;

-- better-auth compatible user and session tables, for a stand-alone install.
-- Applications that already have them (better-auth) keep their own.
CREATE TABLE IF NOT EXISTS "user" (
  id             TEXT PRIMARY KEY,
  name           TEXT NOT NULL,
  email          TEXT NOT NULL UNIQUE,
  email_verified INTEGER NOT NULL DEFAULT 0,
  image          TEXT,
  created_at     INTEGER NOT NULL DEFAULT (unixepoch()),
  updated_at     INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE IF NOT EXISTS session (
  id          TEXT PRIMARY KEY,
  expires_at  INTEGER NOT NULL,
  token       TEXT NOT NULL UNIQUE,
  created_at  INTEGER NOT NULL DEFAULT (unixepoch()),
  updated_at  INTEGER NOT NULL DEFAULT (unixepoch()),
  ip_address  TEXT,
  user_agent  TEXT,
  user_id     TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS session_user_id ON session(user_id);

CREATE TABLE IF NOT EXISTS ai_provider (
  id               TEXT PRIMARY KEY,
  user_id          TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,

  provider         TEXT NOT NULL CHECK (provider IN (
                     'openrouter', 'openai', 'anthropic', 'ollama',
                     'groq', 'gemini', 'cohere')),
  provider_user_id TEXT,

  -- base64(nonce || ciphertext || tag), AES-256-GCM; NULL only for a keyless ollama
  api_key          TEXT,
  key_hash         TEXT,
  key_label        TEXT,
  api_url          TEXT,

  is_active        INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
  is_default       INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),

  usage_limit      INTEGER CHECK (usage_limit IS NULL OR usage_limit >= 0),
  -- derived, never written: limit - usage floored at 0, NULL without a limit
  usage_remaining  INTEGER GENERATED ALWAYS AS (
                     CASE WHEN usage_limit IS NULL THEN NULL
                          ELSE MAX(usage_limit - current_usage, 0) END) VIRTUAL,
  current_usage    INTEGER NOT NULL DEFAULT 0,

  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  last_used_at     INTEGER,

  access_token     TEXT,
  refresh_token    TEXT,
  token_expires_at INTEGER,

  supported_models TEXT,  -- JSON array
  provider_config  TEXT,  -- JSON object

  UNIQUE (user_id, provider)
);
-- One default per user, whatever races happen above it.
CREATE UNIQUE INDEX IF NOT EXISTS ai_provider_one_default
  ON ai_provider(user_id) WHERE is_default = 1;
CREATE INDEX IF NOT EXISTS ai_provider_user_created
  ON ai_provider(user_id, created_at);

-- OpenRouter PKCE flows under way: the server keeps the verifier, the browser
-- carries only the opaque state. Single use, ten minutes; the state is stored
-- as its SHA-256 (it is a bearer secret), the verifier encrypted like keys.
CREATE TABLE IF NOT EXISTS ai_provider_oauth_state (
  state_hash    TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
  code_verifier TEXT NOT NULL,
  callback_url  TEXT NOT NULL,
  expires_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_provider_oauth_state_expires
  ON ai_provider_oauth_state(expires_at);
