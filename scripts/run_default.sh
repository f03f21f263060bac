#!/usr/bin/env bash
# Set up (if needed) and run the default offline experiment: 10 clients (3 malicious), FedAvg,
# post-hoc defense L1, evaluations and report. Extra arguments go to `flwr run`, e.g.
#   bash scripts/run_default.sh --run-config "defense.aggregator='median'"
# `flwr run` exits 0 even when the run fails, so the outcome is checked from the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flwr ] || bash scripts/setup.sh
. .venv/bin/activate
. scripts/flower_env.sh
log=$(mktemp)
flwr run . --stream "$@" 2>&1 | tee "$log"
python -m fedsafe.check_run "$log"
