#!/bin/sh
# Build the fetched sources (vendor/src/) as static musl libraries for one architecture.
#   vendor/build.sh ARCH OUT       ARCH: x86_64 | aarch64; OUT: build/ARCH/vendor
# Result: OUT/include, OUT/lib/lib{bearssl,curl,inih,llhttp}.a, OUT/cacert.pem.
# Each library is built once; a stamp in OUT records it, so a second run does nothing.
set -eu
ARCH=$1
OUT=$2
VENDOR=$(cd "$(dirname "$0")" && pwd)
SRC=$VENDOR/src
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
# A change to this script, the lock or a patch rebuilds everything for this architecture.
inputs=$(cat "$VENDOR/build.sh" "$VENDOR/sources.lock" "$VENDOR"/patches/*.patch 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/.inputs" 2>/dev/null)" != "$inputs" ]; then
  rm -rf "$OUT" && mkdir -p "$OUT" && echo "$inputs" > "$OUT/.inputs"
fi
WORK=$OUT/work
mkdir -p "$WORK" "$OUT/include" "$OUT/lib"

die() { echo "vendor/build.sh: $*" >&2; exit 1; }

case $ARCH in
  host)    CC=gcc;                    HOST=$(uname -m)-linux-gnu; AR=ar;              RANLIB=ranlib ;;
  x86_64)  CC=musl-gcc;               HOST=x86_64-linux-musl;  AR=ar;                  RANLIB=ranlib ;;
  aarch64) CC=aarch64-linux-musl-gcc; HOST=aarch64-linux-musl; AR=aarch64-linux-gnu-ar; RANLIB=aarch64-linux-gnu-ranlib ;;
  *) die "unknown ARCH '$ARCH' (x86_64 or aarch64)" ;;
esac
command -v "$CC" >/dev/null || die "'$CC' is missing: run 'make deps' as root"
CFLAGS="-Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables"
export CC AR RANLIB

done_() { [ -f "$OUT/.$1.built" ]; }
mark() { touch "$OUT/.$1.built"; echo "vendor: built $1 for $ARCH"; }
fresh() { rm -rf "$WORK/$1"; cp -a "$SRC/$1" "$WORK/$1"; }

build_bearssl() {
  done_ bearssl && return
  fresh bearssl
  make -s -C "$WORK/bearssl" CONF=Unix CC="$CC" AR="$AR" LD="$CC" LDDLL="$CC" \
    CFLAGS="$CFLAGS -W -Wall" lib >"$WORK/bearssl.log" 2>&1 || { tail -30 "$WORK/bearssl.log"; die "BearSSL build failed"; }
  cp "$WORK/bearssl/build/libbearssl.a" "$OUT/lib/"
  cp "$WORK/bearssl/inc/"*.h "$OUT/include/"
  mark bearssl
}

build_curl() {
  done_ curl && return
  rm -rf "$WORK/curl" && mkdir -p "$WORK/curl"
  # HTTP and HTTPS only, BearSSL for TLS, no compression, no CA path: the bundle is handed to
  # libcurl as a blob at run time.
  (cd "$WORK/curl" && "$SRC/curl/configure" --host="$HOST" --build="$(uname -m)-linux-gnu" \
      CFLAGS="$CFLAGS" CPPFLAGS="-I$OUT/include" LDFLAGS="-L$OUT/lib" \
      --disable-shared --enable-static --with-bearssl="$OUT" --without-ca-bundle --without-ca-path \
      --without-ca-fallback --disable-ca-search \
      --enable-http --disable-ftp --disable-file --disable-ipfs --disable-ldap --disable-ldaps \
      --disable-rtsp --disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap \
      --disable-smb --disable-smtp --disable-gopher --disable-mqtt --disable-websockets \
      --disable-manual --disable-docs --disable-ntlm --disable-kerberos-auth --disable-negotiate-auth \
      --disable-aws --disable-tls-srp --disable-cookies --disable-netrc --disable-alt-svc \
      --disable-hsts --disable-doh --disable-mime --disable-form-api --disable-httpsrr \
      --disable-progress-meter --disable-libcurl-option --disable-dateparse --disable-unix-sockets \
      --enable-threaded-resolver --enable-symbol-hiding --enable-proxy --disable-headers-api \
      --disable-get-easy-options \
      --without-zlib --without-brotli --without-zstd --without-libpsl --without-libidn2 \
      --without-nghttp2 --without-librtmp --without-libssh2 --without-libssh --without-libuv \
      >"$WORK/curl-configure.log" 2>&1) || { tail -30 "$WORK/curl-configure.log"; die "curl configure failed"; }
  # Only the library: plain 'make -C lib' also builds a second, unit-test copy.
  make -s -C "$WORK/curl/lib" libcurl.la >"$WORK/curl.log" 2>&1 || { tail -30 "$WORK/curl.log"; die "curl build failed"; }
  cp "$WORK/curl/lib/.libs/libcurl.a" "$OUT/lib/"
  mkdir -p "$OUT/include/curl" && cp "$SRC/curl/include/curl/"*.h "$OUT/include/curl/"
  mark curl
}

build_inih() {
  done_ inih && return
  fresh libinih
  # INI_HANDLER_LINENO gives config errors their line number; sluice's Makefile sets the same
  # flags when it includes ini.h. Errors do not stop parsing: --check reports all of them.
  $CC $CFLAGS -DINI_HANDLER_LINENO=1 -DINI_STOP_ON_FIRST_ERROR=0 -DINI_ALLOW_INLINE_COMMENTS=1 \
    -DINI_USE_STACK=1 -DINI_MAX_LINE=4096 -c "$WORK/libinih/ini.c" -o "$WORK/ini.o"
  $AR rcs "$OUT/lib/libinih.a" "$WORK/ini.o"
  cp "$WORK/libinih/ini.h" "$OUT/include/"
  mark inih
}

build_jsmn() {
  done_ jsmn && return
  cp "$SRC/jsmn/jsmn.h" "$OUT/include/"
  mark jsmn
}

build_llhttp() {
  done_ llhttp && return
  rm -rf "$WORK/llhttp" && mkdir -p "$WORK/llhttp"
  for f in llhttp api http; do
    $CC $CFLAGS -I"$SRC/nodejs/llhttp/include" -c "$SRC/nodejs/llhttp/src/$f.c" -o "$WORK/llhttp/$f.o"
  done
  $AR rcs "$OUT/lib/libllhttp.a" "$WORK/llhttp/"*.o
  cp "$SRC/nodejs/llhttp/include/llhttp.h" "$OUT/include/"
  mark llhttp
}

# The CA bundle embedded in the binary: Debian's ca-certificates (Mozilla's set), sorted so
# the build is reproducible.
build_cacert() {
  done_ cacert && return
  find "$SRC/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort | xargs cat > "$OUT/cacert.pem"
  mark cacert
}

build_bearssl
build_curl
build_inih
build_jsmn
build_llhttp
build_cacert
