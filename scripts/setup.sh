#!/usr/bin/env bash
# Set up .venv: kvmharness built and installed (native/ and guest/ are built
# by pip through cffi), with the test and benchmark tools; and QEMU, which
# the qemu tests and `qemu-check` need, installed when missing (Debian's
# qemu-system-x86, as root through apt-get; KVMH_NO_QEMU=1 skips it).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "kvmharness needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --editable ".[test]"

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "${KVMH_NO_QEMU:-0}" != 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing QEMU (qemu-system-x86) for the qemu tests and qemu-check" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }
    else
        echo "setup: QEMU is not installed; qemu-check and the qemu tests need it (as root: apt-get install qemu-system-x86)" >&2
    fi
fi
