#!/bin/sh
# Certificates for a fleet's mutual TLS (the same files testbed's tls.rs makes for the tests):
# a CA, the gateways' server certificate (gateway.tokengate.internal) and the edges' client
# certificate (edge.tokengate.internal). For the compose demo (Dockerfile, `fleet-certs`)
# and for trying the fleet by hand; in production use your own PKI.
#   sh envoy/fleet/make-certs.sh DIR
set -eu
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=tokengate fleet CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
leaf() { # name, usage
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1.tokengate.internal" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s.tokengate.internal\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\n' "$1" "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm "$1.csr" "$1.ext"
}
leaf gateway serverAuth
leaf edge clientAuth
# The CA key signs nothing more: it does not stay next to the certificates. The keys are
# readable by the Envoy image's unprivileged user.
rm ca.key ca.srl
chmod 0644 ./*.key
