#!/usr/bin/env bash
# Point `flwr` on this machine at a SuperLink: writes `[superlink.NAME]` into
# $FLWR_HOME/config.toml (default ~/.flwr) and makes it the default connection.
#
#   bash deploy/connect.sh HOST:PORT [CA_CERT]      # TLS, trusting CA_CERT (default certs/ca.crt)
#   bash deploy/connect.sh HOST:PORT --insecure     # plain HTTP
#   FEDSAFE_CONNECTION=lab bash deploy/connect.sh ...   # another connection name than `fedsafe`
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: bash deploy/connect.sh HOST:PORT [CA_CERT | --insecure]"
name="${FEDSAFE_CONNECTION:-fedsafe}"
if [ "${2:-}" = "--insecure" ]; then
  "${DEPLOY_HELPER[@]}" connection "$name" "$1" --insecure --default
else
  "${DEPLOY_HELPER[@]}" connection "$name" "$1" --root-certificates "${2:-$DEPLOY_DIR/certs/ca.crt}" --default
fi
