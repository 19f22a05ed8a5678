#!/usr/bin/env bash
# Set up, then run the whole test suite (what .ci/run runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest "$@"
