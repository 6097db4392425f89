#!/usr/bin/env bash
# Main job: set up, then run the fusedlr demo against torch (GPU if usable, else CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh plot
. .venv/bin/activate
python -m fusedlr.demo --out out "$@"
