#!/usr/bin/env bash
# Set up .venv: kvmharness built and installed (native/ and guest/ are built
# by pip through cffi), with the test and benchmark tools.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "kvmharness needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --editable ".[test]"
