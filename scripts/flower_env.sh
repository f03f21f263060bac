# Source me: the Flower environment for a local simulation of the whole federation.
# A project-local FLWR_HOME holds the federation: one SuperNode per client (clients.num = 10
# by default) and 1 CPU per client, so Ray runs as many clients at once as there are cores.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FLWR_HOME="${FLWR_HOME:-$_root/.flwr}"
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1  # else flwr uv-installs a CUDA torch
export TOKENIZERS_PARALLELISM=false
export RAY_DEDUP_LOGS=0  # one line per client and round: Ray would fold them into "[repeated 2x]"
mkdir -p "$FLWR_HOME"
if [ ! -f "$FLWR_HOME/config.toml" ]; then
  cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local"

[superlink.local]
address = ":local:"
options.num-supernodes = ${FEDSAFE_NUM_CLIENTS:-10}
options.backend.client-resources.num-cpus = 1
options.backend.client-resources.num-gpus = 0
TOML
fi
unset _root
