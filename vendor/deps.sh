#!/bin/sh
# Install the Debian packages sluice needs, only those missing.
#   vendor/deps.sh build [ARCH]   what 'make' needs (musl, the source unpackers); with
#                                 ARCH=aarch64 also the cross compiler and musl for arm64
#   vendor/deps.sh test           all of that for both architectures, and the test tools
# Run as root (or it names what to install and stops).
set -eu
set_=${1:-build}
BUILD="musl-tools musl-dev gcc make dpkg-dev xz-utils patch file debian-archive-keyring ca-certificates"
CROSS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-dev:arm64"
TEST="qemu-user-static openssl util-linux python3 binutils nginx wrk valgrind"
case $set_ in
  build) want=$BUILD; [ "${2:-}" = aarch64 ] && want="$BUILD $CROSS" ;;
  test)  want="$BUILD $CROSS $TEST" ;;
  *) echo "usage: vendor/deps.sh build [ARCH] | test" >&2; exit 2 ;;
esac

missing=
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "sluice needs these Debian packages:$missing" >&2
  echo "install them as root: apt-get install$missing   (or run 'make deps' as root)" >&2
  exit 1
fi
case "$missing" in
  *:arm64*) dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64 ;;
esac
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -q update >/dev/null
apt-get -q install -y --no-install-recommends $missing >/dev/null
