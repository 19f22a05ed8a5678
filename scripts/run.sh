#!/usr/bin/env bash
# Set up, then the main job: describe this KVM host, then measure the guest's
# dirty rate in all three modes against theory (the seed's table, quick
# version: 1 GiB, five calc-times, three runs each) into results/bench-quick/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/kvmharness probe
.venv/bin/kvmharness bench --quick --out results/bench-quick "$@"
