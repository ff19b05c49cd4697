#!/usr/bin/env bash
# Benchmark of the metered proxy (not a test: it prints figures, asserts nothing).
# Side by side, against one fast mock provider on loopback:
#   direct   wrk -> mock
#   stock    wrk -> httpd mod_proxy_http (fixed key header) -> mock
#   aiprov   wrk -> httpd mod_aiprov (session lookup, decryption, usage write) -> mock
# for a plain and a streamed chat completion, in two scenarios:
#   A: 50 ms upstream delay, 256 connections     B: instant upstream, 32 connections
# Columns: requests/s, p50 and p99 latency, httpd CPU ms per request, httpd RSS.
# Run as root from the checkout after a build: bench/run.sh [seconds per run, default 10]
# BENCH_SCENARIOS="A B" and BENCH_TARGETS="direct stock aiprov" pick a subset
# (e.g. to profile one with perf while it runs); BENCH_DB=pgsql stores in a
# throwaway PostgreSQL on loopback instead of SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
secs=${1:-10}
so=$top/mod_aiprov/.libs/mod_aiprov.so
[ -f "$so" ] || { echo "build first (tools/quickstart.sh or ./configure && make)" >&2; exit 1; }
for p in wrk nodejs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p"; }
done

work=$(mktemp -d /tmp/aiprov-bench.XXXXXX)
chmod 755 "$work"
mock_port=18090 httpd_port=18091 pg_port=18092
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
cleanup() {
    [ -f "$work/httpd.pid" ] && kill "$(cat "$work/httpd.pid")" 2>/dev/null || true
    [ -n "${mock_pid:-}" ] && kill "$mock_pid" 2>/dev/null || true
    [ -d "$work/pg" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop \
        >/dev/null 2>&1 || true
    sleep 1
    rm -rf "$work"
}
trap cleanup EXIT

# --- database, key, session --------------------------------------------------
token=$(openssl rand -hex 24)
seed="INSERT INTO \"user\"(id, name, email) VALUES ('bench', 'Bench', 'bench@example.invalid');"
if [ "${BENCH_DB:-sqlite}" = pgsql ]; then
    # as durable as SQLite's WAL with synchronous=NORMAL: no wait for the disk
    chown postgres: "$work"
    runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o \
        "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c synchronous_commit=off" start >/dev/null
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -f sql/postgresql.sql
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -c "$seed" -c \
        "INSERT INTO session(id, token, user_id, expires_at) VALUES ('s1', '$token', 'bench', now() + interval '1 day')"
    dbd="DBDriver pgsql
DBDParams \"host=127.0.0.1 port=$pg_port dbname=postgres user=postgres\"
DBDMax 20"
else
    sqlite3 "$work/aiprov.db" < sql/sqlite.sql > /dev/null
    sqlite3 "$work/aiprov.db" "$seed
INSERT INTO session(id, token, user_id, expires_at) VALUES ('s1', '$token', 'bench', unixepoch() + 86400);"
    chown -R www-data:www-data "$work"
    dbd="DBDriver sqlite3
DBDParams \"$work/aiprov.db\"
DBDMax 100"
fi
(umask 077; openssl rand -base64 32 > "$work/aiprov.key")

cat > "$work/httpd.conf" <<CONF
ServerRoot "$work"
ServerName localhost
Listen 127.0.0.1:$httpd_port
PidFile "$work/httpd.pid"
DefaultRuntimeDir "$work"
ErrorLog "$work/error.log"
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
LoadModule dbd_module /usr/lib/apache2/modules/mod_dbd.so
LoadModule aiprov_module "$so"
# enough threads for 256 connections that each wait 50 ms upstream
ServerLimit 4
StartServers 4
ThreadsPerChild 100
ThreadLimit 100
MaxRequestWorkers 400
MaxConnectionsPerChild 0
# keep every process: CPU is read from the processes alive at the end
MinSpareThreads 25
MaxSpareThreads 400
KeepAliveTimeout 30
MaxKeepAliveRequests 0
<Directory />
    AllowOverride None
    Require all denied
</Directory>
$dbd
<Location /api/ai-providers>
    SetHandler aiprov
    Require all granted
    AIProvEncryptionKeyFile "$work/aiprov.key"
    AIProvProviderURL openai http://127.0.0.1:$mock_port/v1
</Location>
# the floor: what any Apache reverse proxy costs for the same call
ProxyPass /stock/ http://127.0.0.1:$mock_port/
<Location /stock/>
    Require all granted
    RequestHeader set Authorization "Bearer sk-bench-fixed-key-0000000000"
</Location>
CONF

start_mock() {
    [ -n "${mock_pid:-}" ] && kill "$mock_pid" 2>/dev/null && sleep 0.5
    node bench/mock.js "$mock_port" "$1" > "$work/mock.log" 2>&1 &
    mock_pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$mock_port/" && return; sleep 0.1; done
    echo "the mock did not start" >&2; exit 1
}

/usr/sbin/apache2 -f "$work/httpd.conf" -k start
for _ in $(seq 50); do [ -f "$work/httpd.pid" ] && break; sleep 0.1; done
sleep 1
start_mock 0
id=$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
     -d '{"provider":"openai","apiKey":"sk-bench-0000000000000000"}' \
     "http://127.0.0.1:$httpd_port/api/ai-providers" | sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p')
[ -n "$id" ] || { echo "could not create the provider row" >&2; cat "$work/error.log" >&2; exit 1; }

httpd_pids() { pgrep -f "apache2 -f $work/httpd.conf" | tr '\n' ' '; }
cpu_ticks() {   # utime + stime of every httpd process, in clock ticks
    local t=0 p
    for p in $(httpd_pids); do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
rss_mb() {
    local kb=0 p
    for p in $(httpd_pids); do
        [ -r "/proc/$p/status" ] && kb=$((kb + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo $((kb / 1024))
}
hz=$(getconf CLK_TCK)

# run NAME URL CONNECTIONS STREAM
run() {
    local name=$1 url=$2 conns=$3 stream=$4 before after out rps p50 p99 reqs non2xx cpu
    before=$(cpu_ticks)
    out=$(STREAM=$stream TOKEN=$token wrk -t2 -c"$conns" -d"${secs}s" --latency \
          -s bench/chat.lua "$url" 2>&1 | grep '^RESULT')
    after=$(cpu_ticks)
    rps=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out")
    p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")
    reqs=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
    non2xx=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$out")
    if [ "$name" = direct ]; then cpu="-"; else
        cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" \
              'BEGIN { printf "%.3f", n ? t * 1000 / hz / n : 0 }'); fi
    printf '%-8s %-7s %6s %10s %9s %9s %10s %8s %7s\n' "$name" \
        "$([ "$stream" = 1 ] && echo stream || echo plain)" "$conns" "$rps" "$p50" "$p99" \
        "$cpu" "$(rss_mb)" "$non2xx"
}

header() {
    printf '\n%s\n' "$1"
    printf '%-8s %-7s %6s %10s %9s %9s %10s %8s %7s\n' target kind conns 'req/s' 'p50 ms' \
        'p99 ms' 'cpu ms/req' 'rss MB' 'non-2xx'
}

aiprov_url="http://127.0.0.1:$httpd_port/api/ai-providers/$id/proxy/chat/completions"
stock_url="http://127.0.0.1:$httpd_port/stock/v1/chat/completions"
direct_url="http://127.0.0.1:$mock_port/v1/chat/completions"

echo "mod_aiprov benchmark: $(nproc) cores, ${secs}s per run, wrk -t2; httpd event MPM; ${BENCH_DB:-sqlite}"
for scenario in "A 50 256" "B 0 32"; do
    read -r label delay conns <<<"$scenario"
    [[ " ${BENCH_SCENARIOS:-A B} " == *" $label "* ]] || continue
    start_mock "$delay"
    header "Scenario $label: upstream delay ${delay} ms, $conns connections"
    for stream in 0 1; do
        for target in ${BENCH_TARGETS:-direct stock aiprov}; do
            url_var=${target}_url
            run "$target" "${!url_var}" "$conns" "$stream"
        done
    done
done
q="SELECT current_usage FROM ai_provider WHERE id = '$id'"
if [ "${BENCH_DB:-sqlite}" = pgsql ]; then
    usage=$(psql -X -At -h 127.0.0.1 -p "$pg_port" -U postgres -c "$q")
else
    usage=$(sqlite3 "$work/aiprov.db" "$q")
fi
echo
echo "tokens counted by mod_aiprov over all its runs: $usage (15 per call)"
