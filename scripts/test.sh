#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, against what ships: installs the Debian
# packages the tests need, builds the sdist and the wheel, installs the wheel (with its `test`
# extra) into a fresh venv (.venv-test/), and runs pytest there on a copy of the tests, so that
# `iocwatch` is imported from the venv's site-packages and never from this checkout.
# Real traffic tests need root (network namespaces) and Debian's dnsmasq, nginx, curl, tcpdump,
# tshark, iptables, openvpn, openssh-client; without root they are skipped with the reason shown. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
need=()
for pair in tshark:tshark dumpcap:tshark tcpdump:tcpdump dnsmasq:dnsmasq-base nginx:nginx-light \
            curl:curl openssl:openssl ip:iproute2 editcap:tshark mergecap:tshark \
            redis-server:redis-server microsocks:microsocks iptables:iptables openvpn:openvpn \
            ssh:openssh-client; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# the store tests start a throwaway PostgreSQL cluster from Debian's server binaries
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
  echo "test.sh: installing Debian packages: $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

. scripts/venv.sh
venv=$root/.venv-test
make_venv "$venv"
py=$venv/bin/python
pip=("$py" -m pip install -q --disable-pip-version-check)
"${pip[@]}" build

# sdist, then the wheel built from that sdist (so both are complete)
if ! "$py" -m build --outdir "$venv/dist" . >"$venv/build.log" 2>&1; then
  cat "$venv/build.log" >&2
  echo "test.sh: error: python -m build failed (log above, kept in $venv/build.log)" >&2
  exit 2
fi
wheel=$(ls "$venv"/dist/iocwatch-*.whl)
"${pip[@]}" "${wheel}[test]"

# the tests and every file they read (samples, rules, scripts, ...), without the package
# itself: only the wheel can be imported
stage=$venv/stage
mkdir -p "$stage"
tar -c --exclude=./iocwatch --exclude=./.git --exclude=./.venv --exclude=./.venv-test --exclude=./.venv-lint \
    --exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.ruff_cache . | tar -x -C "$stage"
cd "$stage"
export IOCWATCH_REQUIRE_INSTALLED=1 IOCWATCH_STRICT=1 IOCWATCH_SOURCE=$root
export IOCWATCH_SHARED=${IOCWATCH_SHARED:-$(dirname "$root")/shared}
export PATH=$venv/bin:$PATH
unset PYTHONPATH
exec "$py" -m pytest -p no:cacheprovider "$@"
