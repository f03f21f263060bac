#!/usr/bin/env bash
# Set up (if needed) and run the default offline experiment: 10 clients (3 malicious), FedAvg,
# post-hoc defense L1, evaluations and report. Extra arguments go to `flwr run`, e.g.
#   bash scripts/run_default.sh --run-config "defense.aggregator='median'"
# `fedsafe run` (fedsafe/run_command.py) checks the config and the files it names first, shows a
# quiet console (the whole output goes to the log named below), stops the run on Ctrl-C or kill
# (it replaces this shell: exec), stops a local SuperLink it started, and judges the run by its
# files (`flwr run` exits 0 even when the run fails), ending with the run's one-line summary.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flwr ] || bash scripts/setup.sh
. .venv/bin/activate
. scripts/flower_env.sh
log="${FEDSAFE_RUN_LOG:-$(mktemp "${TMPDIR:-/tmp}/fedsafe-run-XXXXXX")}"
echo "fedsafe: the whole output goes to $log"
exec python -m fedsafe.cli run --log "$log" . "$@"
