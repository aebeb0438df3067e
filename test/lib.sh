# test/lib.sh — shared helpers for the shell test suites. Source it; call ok/fail per check and
# finish at the end, which prints the closing "N passed, N failed" line that test/run.sh sums.
T_PASS=0
T_FAIL=0
T_TMP=$(mktemp -d /tmp/sluice-test.XXXXXX)
T_PIDS=

ok()   { T_PASS=$((T_PASS + 1)); echo "ok   - $*"; }
fail() { T_FAIL=$((T_FAIL + 1)); echo "FAIL - $*"; }
# check DESCRIPTION COMMAND...: passes when the command exits 0.
check() { d=$1; shift; if "$@" >"$T_TMP/last.out" 2>&1; then ok "$d"; else fail "$d"; sed 's/^/       /' "$T_TMP/last.out" | head -20; fi; }
# check_not DESCRIPTION COMMAND...: passes when the command exits non-zero.
check_not() { d=$1; shift; if "$@" >"$T_TMP/last.out" 2>&1; then fail "$d (it succeeded)"; sed 's/^/       /' "$T_TMP/last.out" | head -20; else ok "$d"; fi; }
# bg COMMAND...: start a helper process that is killed when the suite ends.
bg() { "$@" & T_PIDS="$T_PIDS $!"; }
cleanup() { for p in $T_PIDS; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T_TMP"; }
trap cleanup EXIT
finish() { echo "$T_PASS passed, $T_FAIL failed"; [ "$T_FAIL" = 0 ]; }

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT: until something listens on 127.0.0.1:PORT (5 s at most).
wait_port() { python3 - "$1" <<'PY'
import socket, sys, time
end = time.time() + 5
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
}

# How to run a binary of ARCH on this machine, and the emulator to copy into an empty root.
runner_for() { [ "$1" = aarch64 ] && [ "$(uname -m)" != aarch64 ] && echo qemu-aarch64-static || true; }

# make_root ARCH DIR: an empty root holding what the Dockerfile's final stage holds (the binary
# and conf/; no /dev, no /etc), plus the emulator when ARCH is foreign.
make_root() {
  rm -rf "$2" && mkdir -p "$2/conf"
  cp "build/$1/sluice" "$2/sluice"
  cp conf/sluice.ini "$2/conf/"
  r=$(runner_for "$1")
  [ -n "$r" ] && cp "$(command -v "$r")" "$2/"
  true
}
# in_root ARCH DIR COMMAND...: run COMMAND (a path inside DIR) in the empty root.
in_root() {
  a=$1 d=$2; shift 2
  r=$(runner_for "$a")
  if [ -n "$r" ]; then unshare --mount --root="$d" "/$r" "$@"; else unshare --mount --root="$d" "$@"; fi
}
