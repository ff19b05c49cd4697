-- mod_aiprov schema for PostgreSQL (12 or later: usage_remaining is a generated column).
-- Load with: psql "$URI" -v ON_ERROR_STOP=1 -f sql/postgresql.sql

-- better-auth compatible user and session tables, for a stand-alone install.
CREATE TABLE IF NOT EXISTS "user" (
  id             TEXT PRIMARY KEY,
  name           TEXT NOT NULL,
  email          TEXT NOT NULL UNIQUE,
  email_verified BOOLEAN NOT NULL DEFAULT false,
  image          TEXT,
  created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS session (
  id          TEXT PRIMARY KEY,
  expires_at  TIMESTAMPTZ NOT NULL,
  token       TEXT NOT NULL UNIQUE,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
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

  is_active        BOOLEAN NOT NULL DEFAULT true,
  is_default       BOOLEAN NOT NULL DEFAULT false,

  usage_limit      BIGINT CHECK (usage_limit IS NULL OR usage_limit >= 0),
  -- derived, never written: limit - usage floored at 0, NULL without a limit
  usage_remaining  BIGINT GENERATED ALWAYS AS (
                     CASE WHEN usage_limit IS NULL THEN NULL
                          ELSE GREATEST(usage_limit - current_usage, 0) END) STORED,
  current_usage    BIGINT NOT NULL DEFAULT 0,

  created_at       TIMESTAMPTZ NOT NULL,
  updated_at       TIMESTAMPTZ NOT NULL,
  last_used_at     TIMESTAMPTZ,

  access_token     TEXT,
  refresh_token    TEXT,
  token_expires_at TIMESTAMPTZ,

  supported_models TEXT,  -- JSON array
  provider_config  TEXT,  -- JSON object

  UNIQUE (user_id, provider)
);
-- One default per user, whatever races happen above it.
CREATE UNIQUE INDEX IF NOT EXISTS ai_provider_one_default
  ON ai_provider(user_id) WHERE is_default;
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
  expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_provider_oauth_state_expires
  ON ai_provider_oauth_state(expires_at);
