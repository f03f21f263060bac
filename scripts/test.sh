#!/usr/bin/env bash
# Set up (if needed) and run the test suite: unit tests, in-process federations and one real
# `flwr run` Ray simulation, all on a tiny random model built in code (no downloads).
# Arguments go to pytest; the everyday lane skips the end-to-end tests marked slow:
#   bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/setup.sh
# The deployment tests make a CA and certificates with openssl.
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; } ||
  { echo "scripts/test.sh: the deployment tests need openssl (apt-get install openssl)" >&2; exit 1; }
. .venv/bin/activate
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
