#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then runs them.
# Real traffic tests need root (network namespaces) and Debian's dnsmasq, nginx, curl, tcpdump,
# tshark; without root they are skipped with the reason shown.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in tshark:tshark dumpcap:tshark tcpdump:tcpdump dnsmasq:dnsmasq-base nginx:nginx-light \
            curl:curl openssl:openssl ip:iproute2 editcap:tshark mergecap:tshark \
            redis-server:redis-server; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# the store tests start a throwaway PostgreSQL cluster from Debian's server binaries
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
python3 -m pip install -q -e '.[test]' 2>&1 | grep -v -e 'Running pip as the' -e 'notice' || true
python3 -m pytest "$@"
