#!/bin/sh
# appliance.sh ARCH — the shipped binary as the appliance promises it: static, stripped, small,
# and working from an empty root (what a FROM scratch image holds), verified TLS included.
set -u
cd "$(dirname "$0")/../.."
. test/lib.sh
ARCH=$1
BIN=build/$ARCH/sluice
MAX=1572864   # 1.5 MiB

desc=$(file -b "$BIN")
case $desc in *"statically linked"*) ok "$ARCH: binary is statically linked" ;; *) fail "$ARCH: binary is not static: $desc" ;; esac
case $desc in *", stripped"*) ok "$ARCH: binary is stripped" ;; *) fail "$ARCH: binary is not stripped: $desc" ;; esac
check_not "$ARCH: binary has no PT_INTERP" sh -c "readelf -lW '$BIN' | grep -q INTERP"
size=$(stat -c %s "$BIN")
if [ "$size" -lt $MAX ]; then ok "$ARCH: binary is $size bytes (< 1.5 MiB)"; else fail "$ARCH: binary is $size bytes (>= 1.5 MiB)"; fi

ROOT=$T_TMP/root
make_root "$ARCH" "$ROOT"
check "$ARCH: the root holds no /dev and no /etc" sh -c "[ ! -e '$ROOT/dev' ] && [ ! -e '$ROOT/etc' ]"

version_in_root() { in_root "$ARCH" "$ROOT" /sluice --version | grep -q "^sluice $(cat VERSION) ($ARCH)"; }
check "$ARCH: --version runs in the empty root" version_in_root

# Verified HTTPS from inside the root, by a client linked exactly like sluice.
CA=$T_TMP/ca
test/system/make_ca.sh "$CA" tls.test
PORT=$(free_port)
bg python3 test/system/tls_server.py "$PORT" "$CA/tls.test.pem" "$CA/tls.test.key"
wait_port "$PORT" || fail "TLS test server did not start"
cp "build/$ARCH/tlsprobe" "$CA/ca.pem" "$CA/other-ca.pem" "$ROOT/"
probe() { in_root "$ARCH" "$ROOT" /tlsprobe --resolve "tls.test:$PORT:127.0.0.1" "$@" "https://tls.test:$PORT/"; }
probe_ok()  { probe "$@" | tee /dev/stderr | grep -q '^HTTP 200'; }
probe_bad() { probe "$@" | tee /dev/stderr | grep -q '^error: SSL peer certificate'; }
check "$ARCH: empty root: HTTPS verified against the test CA" probe_ok --ca /ca.pem
check "$ARCH: empty root: HTTPS refused with the wrong CA" probe_bad --ca /other-ca.pem
check "$ARCH: empty root: HTTPS refused with the embedded bundle (test CA not in it)" probe_bad
finish
