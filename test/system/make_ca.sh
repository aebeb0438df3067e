#!/bin/sh
# make_ca.sh DIR NAME...: a test CA (DIR/ca.pem) and, for each NAME, a server certificate for
# that DNS name signed by it (DIR/NAME.pem, DIR/NAME.key). Also DIR/other-ca.pem: a CA that
# signed nothing here, for the wrong-CA tests.
set -eu
d=$1; shift
mkdir -p "$d"
mkca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=sluice test $1" -keyout "$d/$1.key" -out "$d/$1.pem" 2>/dev/null
}
mkca ca
mkca other-ca
for name in "$@"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" > "$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
done
