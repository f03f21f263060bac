#!/usr/bin/env bash
# Start one SuperNode (one client = one partition) in the foreground.
#
#   bash deploy/supernode.sh --superlink HOST:PORT --partition-id K --num-partitions N \
#        [--insecure] [--key FILE] [--ca FILE] [--port P] [--node-config "k=v ..."]
#
# Default: TLS, trusting $FEDSAFE_DEPLOY_DIR/certs/ca.crt, authenticated with the private key
# $FEDSAFE_DEPLOY_DIR/keys/node-K (its .pub must be registered on the SuperLink first).
# --port is this node's local Runtime API port (where its ClientApp processes connect; default
# 9100+K so several SuperNodes fit on one machine). Pick its GPU with CUDA_VISIBLE_DEVICES.
# The node reads its data (`data.benign`, `attack.data`) and model from its own disk.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

superlink="" pid="" num="" insecure=0 key="" ca="$DEPLOY_DIR/certs/ca.crt" port="" extra=""
while [ $# -gt 0 ]; do
  case "$1" in
    --superlink) superlink="$2"; shift ;;
    --partition-id) pid="$2"; shift ;;
    --num-partitions) num="$2"; shift ;;
    --insecure) insecure=1 ;;
    --key) key="$2"; shift ;;
    --ca) ca="$2"; shift ;;
    --port) port="$2"; shift ;;
    --node-config) extra="$2"; shift ;;
    *) die "unknown argument $1 (see the header of this script)" ;;
  esac
  shift
done
[ -n "$superlink" ] && [ -n "$pid" ] && [ -n "$num" ] || die "needs --superlink, --partition-id and --num-partitions"

args=(--superlink "$superlink" --port "${port:-$((9100 + pid))}"
      --node-config "partition-id=$pid num-partitions=$num${extra:+ $extra}")
if [ "$insecure" = 1 ]; then
  args+=(--insecure)
else
  key="${key:-$DEPLOY_DIR/keys/node-$pid}"
  [ -f "$ca" ] || die "no CA certificate at $ca (copy certs/ca.crt from the SuperLink machine)"
  [ -f "$key" ] || die "no private key at $key (bash deploy/node-key.sh $pid)"
  args+=(--root-certificates "$ca" --auth-supernode-private-key "$key")
fi
exec flower-supernode "${args[@]}"
