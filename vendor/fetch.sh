#!/bin/sh
# Fetch and unpack the pinned Debian sources named in vendor/sources.lock.
#
# Downloads go through a private apt configuration (vendor/.apt/: its own sources list, lists
# and cache) so the system's apt setup is never touched. Every file is checked twice: the
# signed Debian index must list it with the hash we pinned (a mismatch means the lock is stale),
# and apt's downloader verifies the bytes against that hash. Files already present with the
# right hash are not fetched again, so a second run does no network work.
#
# Result: vendor/dl/<file> (downloads), vendor/src/<package>/ (unpacked, patched).
set -eu
cd "$(dirname "$0")"
VENDOR=$(pwd)
LOCK=$VENDOR/sources.lock
DL=$VENDOR/dl
SRC=$VENDOR/src
APTDIR=$VENDOR/.apt
mkdir -p "$DL" "$SRC"

die() { echo "vendor/fetch.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is missing: install Debian package '$2' (or run 'make deps' as root)"; }

need sha256sum coreutils
need xz xz-utils
need dpkg-source dpkg-dev
need patch patch

lock_rows() { grep -v '^[[:space:]]*#' "$LOCK" | grep -v '^[[:space:]]*$'; }
have_file() { [ -f "$DL/$1" ] && echo "$2  $DL/$1" | sha256sum -c --status; }

# The archive URI the machine's own apt sources use for Debian (not -security).
mirror_uri() {
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
  done | head -n 1 | grep . && return
  grep -hsE '^deb(-src)? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed 's/\[[^]]*\]//' | awk '$2 ~ /\/debian\/?$/ { print $2; exit }' | grep . && return
  echo http://deb.debian.org/debian
}

setup_apt() {
  need apt-get apt
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  uri=$(mirror_uri)
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$key" ] || die "$key is missing: install Debian package 'debian-archive-keyring'"
  {
    for suite in $(lock_rows | awk '{ print $3 }' | sort -u); do
      echo "deb-src [signed-by=$key] $uri $suite main"
    done
    # ca-certificates is taken as its binary package (architecture 'all').
    echo "deb [arch=amd64 signed-by=$key] $uri bookworm main"
  } > "$APTDIR/sources.list"
  cat > "$APTDIR/apt.conf" <<EOF
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/none";
Dir::State::Lists "$APTDIR/lists";
Dir::Cache "$APTDIR/cache";
APT::Sandbox::User "root";
EOF
  export APT_CONFIG="$APTDIR/apt.conf"
  echo "vendor: apt-get update (private config, mirror $uri)"
  apt-get -q update >"$APTDIR/update.log" 2>&1 || { cat "$APTDIR/update.log" >&2; die "apt-get update failed"; }
}

# index_row PKG[=VER] FILE: the line apt prints for FILE ('uri' name size SHA256:hash), or nothing
index_row() {
  case "$2" in
    *.deb) uris=$(apt-get download --print-uris "$1" 2>/dev/null || true) ;;
    *)     uris=$(apt-get source --print-uris "$1" 2>/dev/null || true) ;;
  esac
  printf '%s\n' "$uris" | awk -v f="$2" '$2 == f'
}

fetch_missing() {
  apt_ready=no
  lock_rows | while read -r pkg ver suite file sha; do
    have_file "$file" "$sha" && continue
    if [ "$apt_ready" = no ]; then setup_apt; apt_ready=yes; fi
    row=$(index_row "$pkg=$ver" "$file")
    # An upstream tarball outlives its Debian revision (a security update replaces -1+deb13u2
    # by -1+deb13u3 and ships the same orig.tar): look for the file under the newest revision
    # too. The pinned sha256 is what is checked, so the bytes are the pinned ones either way.
    case "$file" in *.orig.tar.*) [ -n "$row" ] || row=$(index_row "$pkg" "$file") ;; esac
    [ -n "$row" ] || die "$pkg $ver: Debian's index has no file $file (is the version still on the mirror?)"
    uri=$(printf '%s\n' "$row" | awk '{ gsub("\047", "", $1); print $1 }')
    idx=$(printf '%s\n' "$row" | awk '{ print $4 }')
    [ "$idx" = "SHA256:$sha" ] || die "$file: the lock pins sha256 $sha, Debian's index says $idx"
    echo "vendor: fetching $file"
    /usr/lib/apt/apt-helper -q download-file "$uri" "$DL/$file.part" "SHA256:$sha" >/dev/null ||
      die "download of $file failed"
    mv "$DL/$file.part" "$DL/$file"
  done
}

# Unpack one package into vendor/src/<pkg>, then apply vendor/patches/<pkg>-*.patch.
unpack() {
  pkg=$1 ver=$2
  # The stamp names the patches' hash too: a changed patch unpacks afresh.
  phash=$(cat "$VENDOR"/patches/"$pkg"-*.patch 2>/dev/null | sha256sum | cut -c1-12)
  stamp="$SRC/.$pkg-$ver-$phash.unpacked"
  [ -f "$stamp" ] && return
  rm -rf "$SRC/$pkg" "$SRC/.$pkg-"*
  files=$(lock_rows | awk -v p="$pkg" '$1 == p { print $4 }')
  dsc=$(printf '%s\n' "$files" | grep '\.dsc$' || true)
  tmp="$SRC/.tmp-$pkg"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if [ -n "$dsc" ]; then
    # dpkg-source applies Debian's own patches (security fixes among them).
    (cd "$tmp" && dpkg-source --no-copy -q -x "$DL/$dsc" "$pkg" >/dev/null 2>&1) ||
      die "dpkg-source could not unpack $dsc"
    mv "$tmp/$pkg" "$SRC/$pkg"
  else
    case $pkg in
      nodejs)
        # Only llhttp's generated C is needed from the node source tree.
        tar -xJf "$DL/$(printf '%s\n' "$files" | grep 'orig.tar')" -C "$tmp" \
          --wildcards '*/deps/llhttp/include/llhttp.h' '*/deps/llhttp/src/*.c' '*/deps/llhttp/LICENSE*'
        mkdir -p "$SRC/$pkg" && mv "$tmp"/*/deps/llhttp "$SRC/$pkg/llhttp" ;;
      ca-certificates)
        (cd "$tmp" && dpkg-deb -x "$DL/$files" .)
        mkdir -p "$SRC/$pkg" && mv "$tmp/usr/share/ca-certificates/mozilla" "$SRC/$pkg/mozilla" ;;
      *)
        tar -xf "$DL/$files" -C "$tmp"
        mv "$tmp"/* "$SRC/$pkg" ;;
    esac
  fi
  rm -rf "$tmp"
  for p in "$VENDOR"/patches/"$pkg"-*.patch; do
    [ -f "$p" ] || continue
    echo "vendor: applying $(basename "$p")"
    patch -s -p1 -d "$SRC/$pkg" < "$p" || die "patch $(basename "$p") does not apply"
  done
  touch "$stamp"
}

fetch_missing
lock_rows | awk '{ print $1, $2 }' | sort -u | while read -r pkg ver; do unpack "$pkg" "$ver"; done
