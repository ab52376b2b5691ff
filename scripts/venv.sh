# Sourced by scripts/setup.sh and scripts/test.sh: make a fresh virtual environment with the
# system's python3. Debian 12's python3 is "externally managed" (PEP 668: pip refuses to install
# into it) and its venv module needs the python3-venv package for pip (ensurepip); as root we
# install that package, otherwise we say which one is missing.
make_venv() {
  local dir=$1 py=${PYTHON:-python3}
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "iocwatch: installing python3-venv (apt-get)" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "iocwatch: error: $py has no venv/ensurepip module: install Debian's python3-venv (as root: apt-get install python3-venv)" >&2
      return 2
    fi
  fi
  rm -rf "$dir"
  "$py" -m venv "$dir"
}
