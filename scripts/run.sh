#!/usr/bin/env bash
# Set up, then the main job: describe this KVM host and run the guest writer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/kvmharness probe
.venv/bin/kvmharness run --mem 1GiB --wps 3M --duration 2s "$@"
