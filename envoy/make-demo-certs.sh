#!/bin/sh
# Certificates for the demo's HTTPS token listener (envoy/tokengate.yaml), made with openssl:
# a CA (ca.crt; its key is deleted once it has signed) and a server certificate for
# localhost and 127.0.0.1 (server.crt, server.key). The same files `cargo xtask demo` makes
# at each start (in target/demo/); docker compose makes them here, when the image is built
# (Dockerfile, stage `demo-certs`). A demo's CA: trust it for this demo only.
#   sh envoy/make-demo-certs.sh DIR
set -eu
dir=${1:?usage: make-demo-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=tokengate demo CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile server.ext -out server.crt 2>/dev/null
# The CA key signs nothing more: it does not stay next to the certificates. The key is
# readable by the Envoy image's unprivileged user.
rm ca.key ca.srl server.csr server.ext
chmod 0644 server.key
