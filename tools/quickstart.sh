#!/usr/bin/env bash
# Install, build and start the mod_aiprov API on 127.0.0.1:8080 with SQLite
# and a generated encryption key, in the foreground (Ctrl-C stops it).
# Everything it makes lives in ./run (database, key, logs), or in
# /var/lib/aiprov-quickstart when httpd's user cannot reach the checkout; run it as root.
#   AIPROV_LISTEN=127.0.0.1:9090 tools/quickstart.sh    another address
#   tools/quickstart.sh --no-install                     skip apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

[ "${1:-}" = "--no-install" ] || tools/deps.sh
if [ ! -f mod_aiprov/.libs/mod_aiprov.so ] || [ -n "$(find mod_aiprov -newer mod_aiprov/.libs/mod_aiprov.so -name '*.[ch]')" ]; then
    [ -f configure ] || autoreconf -fi
    [ -f Makefile ] || ./configure
    make
fi

export AIPROV_RUN=$top/run AIPROV_MODULE=$top/mod_aiprov/.libs/mod_aiprov.so
export AIPROV_LISTEN=${AIPROV_LISTEN:-127.0.0.1:8080} AIPROV_USER=${AIPROV_USER:-www-data}
mkdir -p "$AIPROV_RUN"
# httpd's children must reach the database: a checkout in a private home
# directory (0700) is out of their reach, so the files go elsewhere then.
if ! runuser -u "$AIPROV_USER" -- test -x "$AIPROV_RUN/.."; then
    AIPROV_RUN=/var/lib/aiprov-quickstart
    mkdir -p "$AIPROV_RUN"
fi

# The key: base64 of 32 random bytes, readable by root alone (httpd reads it
# before it gives up root).
if [ ! -f "$AIPROV_RUN/aiprov.key" ]; then
    (umask 077 && openssl rand -base64 32 > "$AIPROV_RUN/aiprov.key")
fi

# The database, writable by the children (the directory too: WAL files).
db=$AIPROV_RUN/aiprov.db
[ -f "$db" ] || sqlite3 "$db" < sql/sqlite.sql > /dev/null
chown "$AIPROV_USER:$AIPROV_USER" "$AIPROV_RUN" "$db"

# A demo user with a session good for 7 days.
token=$(openssl rand -hex 24)
sqlite3 "$db" "INSERT OR IGNORE INTO \"user\"(id, name, email) VALUES ('demo', 'Demo', 'demo@example.invalid');
INSERT INTO session(id, token, user_id, expires_at) VALUES (lower(hex(randomblob(16))), '$token', 'demo', unixepoch() + 7*86400);"

base=http://$AIPROV_LISTEN/api/ai-providers
cat <<MSG

mod_aiprov is starting on http://$AIPROV_LISTEN (logs in $AIPROV_RUN). Try:

  curl -s -H 'Authorization: Bearer $token' $base
  curl -s -H 'Authorization: Bearer $token' -H 'Content-Type: application/json' \\
       -d '{"provider":"openai","apiKey":"sk-your-key-here","isDefault":true}' $base

MSG
exec /usr/sbin/apache2 -f "${AIPROV_CONF:-$top/conf/httpd.conf}" -DFOREGROUND
