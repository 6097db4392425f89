#!/usr/bin/env bash
# Main job: set up, then run the fusedlr demo against torch (GPU if usable, else CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh plot
. .venv/bin/activate
# console script, not "python -m": that would import the source tree instead of the installed build
fusedlr-demo --out out "$@"
