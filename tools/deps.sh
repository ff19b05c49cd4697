#!/bin/bash
# Installs the Debian 12 packages mod_aiprov needs to build, run and test.
# Idempotent: does nothing (and needs no network) when all are installed.
# Usage: sudo tools/deps.sh
set -euo pipefail

PKGS=(
  # build
  gcc make libc6-dev autoconf automake libtool pkg-config
  apache2-dev libssl-dev libcurl4-openssl-dev libjansson-dev
  # run
  apache2 apache2-utils libaprutil1-dbd-sqlite3 libaprutil1-dbd-pgsql openssl
  # test: Apache::Test ships in libapache2-mod-perl2 on Debian (no separate package)
  libapache2-mod-perl2 libapache2-mod-perl2-dev libwww-perl libjson-perl
  libdbd-sqlite3-perl libdbd-pg-perl sqlite3 postgresql postgresql-client curl
  nodejs   # Web Crypto, to prove ciphertexts interchangeable with the original
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps.sh: all ${#PKGS[@]} packages already installed"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "deps.sh: run as root to install: ${missing[*]}" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing ${missing[*]}"
# the lock timeout waits out a concurrent apt/dpkg run instead of failing
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${PKGS[@]}"
