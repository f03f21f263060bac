#!/usr/bin/env bash
# A private CA and the SuperLink's TLS certificate, signed by it.
#
#   bash deploy/certs.sh [HOST ...]
#
# The certificate is valid for localhost, 127.0.0.1, ::1 and every HOST given (the names or IP
# addresses SuperNodes and `flwr` use to reach the SuperLink), e.g.
#   bash deploy/certs.sh superlink.lab.example.org 10.0.0.5
# Writes $FEDSAFE_DEPLOY_DIR/certs/{ca.crt,ca.key,server.crt,server.key}; an existing CA is
# reused, so adding a host later re-signs only the server certificate.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
command -v openssl >/dev/null || die "needs openssl (apt-get install openssl)"

out="$DEPLOY_DIR/certs"
mkdir -p "$out"
chmod 700 "$out"
cd "$out"

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=fedsafe/CN=fedsafe federation CA" \
    -out ca.crt
  chmod 600 ca.key
fi

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for host in "$@"; do
  if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then sans+=",IP:$host"; else sans+=",DNS:$host"; fi
done

openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
chmod 600 server.key
openssl req -new -key server.key -subj "/O=fedsafe/CN=${1:-localhost}" -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
  -extfile <(printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" "$sans") \
  -out server.crt 2>/dev/null
rm -f server.csr
echo "CA:          $out/ca.crt   (copy to every SuperNode machine and to where you run flwr)"
echo "SuperLink:   $out/server.crt, $out/server.key   (valid for $sans)"
