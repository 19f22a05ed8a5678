#!/usr/bin/env bash
# Set up .venv: kvmharness built and installed (native/ and guest/ are built
# by pip through cffi), with the test and benchmark tools; and the two QEMUs
# the qemu tests and `qemu-check` run against (scripts/setup_qemu.sh:
# Debian's, and bookworm-backports' with millisecond windows in .venv/qemu;
# KVMH_NO_QEMU=1 skips them).  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "kvmharness needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --editable ".[test]"

scripts/setup_qemu.sh
