#!/usr/bin/env bash
# Set-up in one command on a fresh Debian 12 machine (or any Linux with python3 >= 3.11):
# installs iocwatch into .venv (Debian's system python3 refuses pip installs: PEP 668), then
# runs it on a bundled sample. As root it installs python3-venv with apt when that is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
  make_venv .venv
fi
# not editable: what runs is what `pip install .` ships (the package data included)
.venv/bin/python -m pip install -q --disable-pip-version-check .
echo "iocwatch: installed in .venv; the sample (alerts below, records in records.json):" >&2
.venv/bin/iocwatch -r samples/sunburst.pcapng --ioc rules/sunburst.txt -f records.json
cat >&2 <<'TXT'
iocwatch: run it as .venv/bin/iocwatch (or after `. .venv/bin/activate`, as iocwatch), e.g.
    .venv/bin/iocwatch -r capture.pcapng --ioc rules/sunburst.txt --alerts alerts.json -f records.json
TXT
