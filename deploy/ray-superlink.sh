#!/usr/bin/env bash
# A simulation SuperLink whose clients run on an existing (multi-machine) Ray cluster.
#
#   bash deploy/ray-superlink.sh --ray-address HEAD:6379 --num-supernodes N \
#        [--gpus-per-client G] [--cpus-per-client C] [--port P]
#
# Start the cluster first: `ray start --head --port 6379` on one machine, then
# `ray start --address HEAD:6379` on every other one (same fedsafe checkout and venv path, model
# and data reachable on each). Flower's Ray backend calls ray.init() with no address, which joins
# the cluster named by RAY_ADDRESS; this script sets it for the SuperLink, whose simulation
# process inherits it. It also writes the `flwr` connection `fedsafe-ray` (127.0.0.1:P, the
# client resources Ray reserves per simulated client) and makes it the default, so
# `flwr run . --stream` runs there. Plain HTTP on 127.0.0.1: run `flwr` on this machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ray_address="" num="" gpus=0 cpus=1 port=9093
while [ $# -gt 0 ]; do
  case "$1" in
    --ray-address) ray_address="$2"; shift ;;
    --num-supernodes) num="$2"; shift ;;
    --gpus-per-client) gpus="$2"; shift ;;
    --cpus-per-client) cpus="$2"; shift ;;
    --port) port="$2"; shift ;;
    *) die "unknown argument $1 (see the header of this script)" ;;
  esac
  shift
done
[ -n "$ray_address" ] && [ -n "$num" ] || die "needs --ray-address and --num-supernodes"

"${DEPLOY_HELPER[@]}" connection fedsafe-ray "127.0.0.1:$port" --insecure --default \
  --num-supernodes "$num" --cpus-per-client "$cpus" --gpus-per-client "$gpus"
export RAY_ADDRESS="$ray_address"
exec flower-superlink --insecure --simulation --host 127.0.0.1 --port "$port"
