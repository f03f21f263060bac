#!/usr/bin/env bash
# SuperNode key pairs for authentication: $FEDSAFE_DEPLOY_DIR/keys/node-K (private) and node-K.pub.
#
#   bash deploy/node-key.sh K [K ...]      e.g. bash deploy/node-key.sh 0 1 2
#
# Run it on each SuperNode machine for its own K (the private key never leaves it), then bring
# node-K.pub to the SuperLink side and register it with deploy/register.sh.
# An existing key is kept.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || die "usage: bash deploy/node-key.sh K [K ...]"
mkdir -p "$DEPLOY_DIR/keys"
chmod 700 "$DEPLOY_DIR/keys"
for k in "$@"; do
  path="$DEPLOY_DIR/keys/node-$k"
  if [ -f "$path" ]; then echo "$path exists, kept"; else "${DEPLOY_HELPER[@]}" node-key "$path"; fi
done
