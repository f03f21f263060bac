#!/usr/bin/env bash
# Register SuperNode public keys with the running SuperLink (needed with SuperNode auth).
#
#   bash deploy/register.sh [--superlink NAME] PUBKEY [PUBKEY ...]
#   e.g. bash deploy/register.sh ~/.fedsafe/deploy/keys/node-*.pub
#
# Calls `flwr supernode register PUBKEY NAME` (NAME: a connection in $FLWR_HOME/config.toml,
# default `fedsafe`, written by deploy/superlink.sh or deploy/connect.sh). With an in-memory
# SuperLink (no --database) registrations end with it: register again after a restart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

name=fedsafe
if [ "${1:-}" = "--superlink" ]; then name="$2"; shift 2; fi
[ $# -gt 0 ] || die "usage: bash deploy/register.sh [--superlink NAME] PUBKEY [PUBKEY ...]"
pids=()
for pub in "$@"; do  # in parallel: each `flwr` call spends seconds starting up
  flwr supernode register "$pub" "$name" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
