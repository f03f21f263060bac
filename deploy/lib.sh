# Source me: what every deploy/ script shares. Not a command of its own.
#
# FEDSAFE_DEPLOY_DIR holds this federation's files (default ~/.fedsafe/deploy):
#   certs/ca.crt                 the CA every node trusts (copy it to each SuperNode machine)
#   certs/ca.key                 the CA's private key (stays on the machine that made it)
#   certs/server.{crt,key}       the SuperLink's TLS certificate and key
#   keys/node-K{,.pub}           SuperNode K's EC key pair (OpenSSH format, NIST P-384)
_deploy_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_DIR="${FEDSAFE_DEPLOY_DIR:-$HOME/.fedsafe/deploy}"
# The venv of this checkout unless one is active already (each machine has its own).
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$_deploy_root/.venv/bin/activate" ]; then
  . "$_deploy_root/.venv/bin/activate"
fi
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1  # else flwr uv-installs a CUDA torch per run
export TOKENIZERS_PARALLELISM=false
# SuperExec asks its SuperNode for new work every second by default; every quarter second takes
# ~0.4 s off each round. Cost per idle SuperNode, measured: 1% of a core at 1 s, 5% at 0.1 s.
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.25}"
DEPLOY_HELPER=(python "$_deploy_root/deploy/helper.py")

die() { echo "$(basename "$0"): $*" >&2; exit 2; }
