#!/usr/bin/env bash
# Start the SuperLink (the coordinator; the ServerApp runs next to it) in the foreground.
#
#   bash deploy/superlink.sh [--insecure] [--host H] [--port P] [--database FILE]
#
# Default: TLS with the certificates of deploy/certs.sh and SuperNode authentication (only
# SuperNodes whose public key was registered with deploy/register.sh may connect), serving the
# Fleet, Control and Runtime APIs on one HTTPS port (flwr 1.42), 0.0.0.0:9093.
# --insecure: plain HTTP on 127.0.0.1, any SuperNode may join (a quick local try only).
# --database FILE keeps runs and registered SuperNodes across restarts (default: in memory).
# Also writes the `flwr` connection `fedsafe` (127.0.0.1:P) into $FLWR_HOME/config.toml.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

insecure=0 host="" port=9093 database=""
while [ $# -gt 0 ]; do
  case "$1" in
    --insecure) insecure=1 ;;
    --host) host="$2"; shift ;;
    --port) port="$2"; shift ;;
    --database) database="$2"; shift ;;
    *) die "unknown argument $1 (see the header of this script)" ;;
  esac
  shift
done

args=(--port "$port")
[ -n "$database" ] && args+=(--database "$database")
if [ "$insecure" = 1 ]; then
  args+=(--insecure --host "${host:-127.0.0.1}")
  "${DEPLOY_HELPER[@]}" connection fedsafe "127.0.0.1:$port" --insecure --default
else
  certs="$DEPLOY_DIR/certs"
  [ -f "$certs/server.crt" ] || die "no certificates in $certs: run deploy/certs.sh first"
  args+=(--host "${host:-0.0.0.0}" --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.crt"
         --ssl-keyfile "$certs/server.key" --enable-supernode-auth)
  "${DEPLOY_HELPER[@]}" connection fedsafe "127.0.0.1:$port" --root-certificates "$certs/ca.crt" --default
fi
exec flower-superlink "${args[@]}"
