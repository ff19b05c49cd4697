#!/bin/bash
# THE test command: installs dependencies, builds, runs the Apache::Test suite
# on SQLite and then on a throwaway PostgreSQL, and prints as its very last
# line "N passed, N failed" (both runs summed).
#
#   sudo tools/test.sh [--no-install] [--no-build] [-- t/TEST arguments]
#   e.g. tools/test.sh --no-install -- t/api/crud.t -verbose
#
# Environment: CONFIGURE_FLAGS (extra ./configure flags); AIPROV_SANITIZE=1
# (build with ASan+UBSan, run httpd under them, fail on any report);
# AIPROV_MODULE_SO (test another build of the module);
# AIPROV_BACKENDS="sqlite pgsql" (which runs to do; both by default, and
# anything less makes the script fail, so CI cannot silently lose one).
# Exit 0 only if every run executed tests and all of them passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

install=1 build=1 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    --) shift; args=("$@"); break ;;
    *) echo "usage: $0 [--no-install] [--no-build] [-- t/TEST args]" >&2; exit 2 ;;
  esac
  shift
done
BACKENDS=${AIPROV_BACKENDS:-sqlite pgsql}
LOGDIR=$ROOT/t/logs/runs    # kept across t/TEST -clean (it only removes its own files)
die() { echo "test.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

# One run per checkout: two would share t/conf, t/tmp, the logs and the build.
# (fd 9 is closed for the daemons started below, or they would keep the lock)
mkdir -p "$LOGDIR"
exec 9>"$LOGDIR/.lock"
if ! flock -n 9; then
  echo "test.sh: waiting for another tools/test.sh run in this checkout"; flock 9
fi

if [ $install = 1 ]; then tools/deps.sh || die "tools/deps.sh failed"; fi

flags=${CONFIGURE_FLAGS:-}
[ "${AIPROV_SANITIZE:-0}" = 1 ] && flags="$flags --enable-sanitizers"
if [ $build = 1 ]; then
  # shellcheck disable=SC2086  # CONFIGURE_FLAGS is a list of words
  { autoreconf -fi && ./configure $flags; } || die "configure failed"
  # objects do not depend on the flags: switching ASan on or off needs a clean
  asan=0; ldd mod_aiprov/.libs/mod_aiprov.so 2>/dev/null | grep -q libasan && asan=1
  [ -f mod_aiprov/.libs/mod_aiprov.so ] && [ "$asan" != "${AIPROV_SANITIZE:-0}" ] && make clean >/dev/null
  make -j"$(nproc)" || die "build failed"
fi
SO=${AIPROV_MODULE_SO:-mod_aiprov/.libs/mod_aiprov.so}    # t/TEST.PL honours the same variable
[ -f "$SO" ] || die "$SO missing: build first"

# As root, httpd's children drop to a user who must reach t/ (the SQLite file,
# htpasswd): the checkout's owner under sudo (home directories are 0700 on
# Debian 12), nobody when root owns it (CI).
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  child=nobody owner=$(stat -c %U "$ROOT")
  if [ "$owner" != root ] && [ "$owner" != UNKNOWN ]; then
    child=$owner; run_as=(-user "$owner" -group "$(stat -c %G "$ROOT")")
  fi
  runuser -u "$child" -- test -x "$ROOT/t" ||
    die "user $child cannot enter $ROOT/t: move the checkout out of a private directory"
fi

perl -MApache::TestMM -e 'Apache::TestMM::generate_script("t/TEST")' >/dev/null || die "cannot generate t/TEST"
rm -f t/SMOKE    # generated along with t/TEST, not used

# ------------------------------------------------------------- sanitizers
httpd_args=()
if [ "${AIPROV_SANITIZE:-0}" = 1 ]; then
  SANDIR=$(mktemp -d /tmp/aiprov-asan.XXXXXX); chmod 1777 "$SANDIR"   # children are nobody
  libasan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
  libubsan=$(readlink -f "$(gcc -print-file-name=libubsan.so)")
  echo "leak:apr_allocator_create" > "$SANDIR/lsan.supp"    # httpd core, one per process
  # LD_PRELOAD only on the exec line (preloading into the wrapper's own tools hangs
  # them). The module is not preloaded: that would name its frames in leak
  # reports after dlclose, but `httpd -t` on a bad configuration then hangs at
  # exit (a destructor deadlock in libp11-kit, via libcurl), so configtest.t
  # could not run; a leak in the module still fails the run, its frames unnamed.
  cat > "$SANDIR/httpd" <<EOF
#!/bin/sh
export ASAN_OPTIONS="log_path=$SANDIR/asan:detect_leaks=1"
export UBSAN_OPTIONS="log_path=$SANDIR/ubsan:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$SANDIR/lsan.supp:print_suppressions=0"
LD_PRELOAD="$libasan $libubsan" exec /usr/sbin/apache2 "\$@"
EOF
  chmod 755 "$SANDIR/httpd"
  httpd_args=(-httpd "$SANDIR/httpd")
fi

# ------------------------------------------------------------- one run
declare -A PASSED FAILED STATUS
run_suite() {    # run_suite NAME [t/TEST options]
  local name=$1 log=$LOGDIR/$1.log; shift
  echo "=== $name: t/TEST -port select $* ${args[*]}"
  t/TEST -clean >/dev/null 2>&1 9>&-
  t/TEST -port select "${run_as[@]}" "${httpd_args[@]}" "$@" "${args[@]}" 2>&1 9>&- | tee "$log"
  local rc=${PIPESTATUS[0]}
  cp -f t/logs/error_log "$LOGDIR/$name.error_log" 2>/dev/null
  cp -f t/logs/mock.log "$LOGDIR/$name.mock.log" 2>/dev/null
  # t/TEST.PL stops the mock it started (t/mock/upstream.pl); one left over is a harness bug
  local mpid
  mpid=$(cat t/tmp/mock.pid 2>/dev/null)
  if [ -n "$mpid" ] && grep -qa 't/mock/upstream\.pl' "/proc/$mpid/cmdline" 2>/dev/null; then
    echo "test.sh: the mock (pid $mpid) outlived t/TEST: stopping it" >&2
    kill "$mpid" 2>/dev/null
  fi

  # toolchain.md section 5: Harness "Files=, Tests=" and "Failed x/y subtests" lines
  local tests failed passed
  tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log" | tail -1)
  failed=$(sed -n 's/^Failed [0-9]*\/[0-9]* test programs*\. \([0-9]*\)\/[0-9]* subtests failed\./\1/p' "$log" | tail -1)
  tests=${tests:-0} failed=${failed:-0}
  passed=$(( tests > failed ? tests - failed : 0 ))
  # Subtests are not the whole story: per failed program of the Test Summary
  # Report, add the planned tests it never ran, and count one for a program
  # that died (or exited non-zero) without a failed subtest.
  if [ "$rc" -ne 0 ]; then
    failed=$(awk '
      function flush() { if (open) total += (cur > 0 ? cur : 1); open = 0 }
      /^Test Summary Report/ { report = 1; next }
      report && /^Files=/ { report = 0 }
      report && /\(Wstat: / { flush(); open = 1; cur = 0
                              if (match($0, /Failed: [0-9]+/)) cur = substr($0, RSTART + 8, RLENGTH - 8) + 0 }
      report && match($0, /You planned [0-9]+ tests? but ran [0-9]+/) {
        split(substr($0, RSTART, RLENGTH), w, " "); if (w[3] > w[7]) cur += w[3] - w[7] }
      END { flush(); print total + 0 }' "$log")
  fi
  local status=PASS
  if [ "$rc" -ne 0 ] || [ "$failed" -gt 0 ]; then status="FAIL (t/TEST exit $rc)"
  elif [ "$tests" -eq 0 ] || grep -q '^Result: NOTESTS' "$log"; then status="FAIL (no tests ran)"
  fi
  # a run that failed without a failed subtest (httpd did not start...) still counts one
  [ "$status" != PASS ] && [ "$failed" -eq 0 ] && failed=1
  if [ -n "${SANDIR:-}" ]; then
    # reports are written as httpd's processes exit, after t/TEST has returned
    for _ in $(seq 60); do pgrep -f -- "-d $ROOT/t -f " >/dev/null || break; sleep 0.5; done
    local reports dir=$LOGDIR/$name.sanitizer
    rm -rf "$dir"; mkdir -p "$dir"
    mv "$SANDIR"/asan.* "$SANDIR"/ubsan.* "$dir"/ 2>/dev/null
    # UBSan inside libasan may write to httpd's stderr, the error log, instead
    grep -hE 'runtime error:|ERROR: AddressSanitizer' "$LOGDIR/$name.error_log" \
      > "$dir/error_log.reports" 2>/dev/null || rm -f "$dir/error_log.reports"
    reports=$(grep -lE 'ERROR: |runtime error' "$dir"/* 2>/dev/null)
    if [ -n "$reports" ]; then
      status="FAIL (sanitizer reports in $dir)"; failed=$(( failed + 1 ))
      # shellcheck disable=SC2086
      head -n 60 $reports
    fi
  fi
  PASSED[$name]=$passed
  FAILED[$name]=$failed STATUS[$name]=$status
}

# ------------------------------------------------------------- PostgreSQL
PGROOT=
stop_pg() {
  [ -n "$PGROOT" ] || return 0
  as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$PGROOT"; PGROOT=
}
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_pg() {    # a private server on 127.0.0.1:free port, socket in its own dir
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$PGBIN/initdb" ] || { echo "test.sh: PostgreSQL server binaries not found" >&2; return 1; }
  PGROOT=$(mktemp -d /tmp/aiprov-pg.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$PGROOT"    # initdb refuses to run as root
  PGPORT=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1,
             LocalAddr => "127.0.0.1", LocalPort => 0)->sockport')
  # trust only on the socket (for the setup below); TCP needs the password
  as_pg "$PGBIN/initdb" -D "$PGROOT/data" --auth-local=trust --auth-host=scram-sha-256 \
        -U postgres -E UTF8 --no-sync >"$PGROOT/initdb.log" 2>&1 || { cat "$PGROOT/initdb.log"; return 1; }
  as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 30 -o \
        "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >/dev/null 9>&- || { cat "$PGROOT/server.log"; return 1; }
  psql -X -q -h "$PGROOT" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
       -c "CREATE ROLE aiprov LOGIN PASSWORD 'aiprov'" -c "CREATE DATABASE aiprov OWNER aiprov" || return 1
  export AIPROV_PG_URI="postgresql://aiprov:aiprov@127.0.0.1:$PGPORT/aiprov"
  export AIPROV_PG_CONNINFO="host=127.0.0.1 port=$PGPORT dbname=aiprov user=aiprov password=aiprov connect_timeout=5"
}
trap 'stop_pg; [ -z "${SANDIR:-}" ] || rm -rf "$SANDIR"' EXIT
trap 'exit 130' INT TERM    # still runs the EXIT trap

# ------------------------------------------------------------- the runs
for b in $BACKENDS; do
  case $b in
    sqlite) AIPROV_TEST_DB=sqlite run_suite sqlite ;;
    pgsql)
      if start_pg; then
        AIPROV_TEST_DB=pgsql run_suite pgsql -defines AIPROV_PGSQL
      else
        PASSED[pgsql]=0 FAILED[pgsql]=1 STATUS[pgsql]="FAIL (PostgreSQL did not start)"
      fi
      stop_pg ;;
    *) die "unknown backend $b in AIPROV_BACKENDS" ;;
  esac
done

# ------------------------------------------------------------- summary
echo
echo "=== summary (logs in $LOGDIR)"
total_p=0 total_f=0 rc=0
for b in sqlite pgsql; do
  if [ -z "${STATUS[$b]:-}" ]; then
    echo "$b: FAIL (not run)"; total_f=$(( total_f + 1 )); rc=1; continue
  fi
  echo "$b: ${STATUS[$b]}: ${PASSED[$b]} passed, ${FAILED[$b]} failed"
  total_p=$(( total_p + PASSED[$b] )) total_f=$(( total_f + FAILED[$b] ))
  [ "${STATUS[$b]}" = PASS ] || rc=1
done
echo "$total_p passed, $total_f failed"
exit $rc
