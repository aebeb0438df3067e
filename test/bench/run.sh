#!/usr/bin/env bash
# test/bench/run.sh — what `make bench` runs. Prints figures; asserts nothing (exit 0 whatever
# they are; non-zero only when the bench itself cannot start).
#
# In one run, on 127.0.0.1 only, against one mock provider (test/mock/mock.js):
#   direct  the mock itself — the baseline
#   nginx   an nginx reverse proxy in front of the mock (one worker, proxy_buffering off,
#           HTTP/1.1 upstream keep-alive) — the reference cost of one proxy hop
#   sluice  build/x86_64/sluice with provider "mock" (type openai) pointing at the mock
# it measures
#   sync    requests/s and latency p50/p99 at concurrency 1 and 50 (wrk with a Lua POST body
#           when wrk is installed, else build/bench/ssebench --sync), the added latency being the
#           proxy's p50/p99 minus the mock's (a difference of percentiles)
#   streams time to first byte / first token, inter-token gaps and stalled gaps at concurrency
#           50 and 1,000 (build/bench/ssebench)
#   memory  sluice's peak RSS (VmHWM) after the 1,000-stream run (and nginx's for reference)
#   CPU     instructions per proxied sync request, nginx and sluice each under callgrind
#           (test/bench/cgproxy.sh): counted, so the same on a noisy machine; and libcurl
#           alone making the same requests (test/bench/curlfloor.c), the floor under sluice's
#           figure while libcurl is its upstream client
# and prints one markdown table, with sluice/nginx ratios for the added latency.
#
# Nothing is installed here: nginx and wrk are Debian packages (`make deps`, as root). A missing
# nginx skips its column; a missing wrk makes ssebench do the sync runs. A sluice that does not
# answer (yet) is marked failed in its column and the rest goes on.
#
# Knobs (environment):
#   SLUICE=build/x86_64/sluice     the binary under test
#   BENCH_SYNC_SECS=5              each sync run (after a 1 s warm-up)
#   BENCH_STREAM_SECS=6            each stream run (after a 1 s / 2 s warm-up)
#   BENCH_SYNC_MODEL=tokens=20     mock scenario for sync requests
#   BENCH_STREAM_TOKENS=20         tokens per stream
#   BENCH_TPS_50=50                tokens/s per stream at concurrency 50 (gap 20 ms)
#   BENCH_TPS_1000=10              tokens/s per stream at concurrency 1,000 (gap 100 ms: one Node
#                                  process cannot hold 20 ms, or even 50 ms, gaps for 1,000
#                                  streams within 2x; its own jitter must stay under the threshold)
#   BENCH_PIN=1                    for the stream runs, pin the mock to the last CPU, the proxy to
#                                  CPU 0 and the load generator to CPU 1 (CPU 0 too on 2-3 CPUs),
#                                  with taskset, so the mock's pace (hence the gaps) does not depend
#                                  on how busy the proxy keeps the CPUs. The sync runs float: with
#                                  wrk and the proxy pinned to one core, the scheduler, not the
#                                  proxy, would decide the c=50 figures.
#   BENCH_LOGS=build/bench/logs    where every run's raw output is kept
#   BENCH_SLUICE_MEMORY=256M       sluice's [server] memory (1,000 streams need more than 64M)
#   BENCH_NO_WRK=1, BENCH_NO_NGINX=1  behave as if wrk / nginx were not installed
# The streams use `tps`, not `drip`: the mock then sends the first content right after the role
# chunk, so the time to first byte is the same for a plain proxy (which passes the role chunk on
# at once) and for sluice (which holds everything back until the first content, its commit
# point). A stalled gap is one longer than twice the expected gap (1000/tps ms).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
SLUICE=${SLUICE:-build/x86_64/sluice}
SYNC_SECS=${BENCH_SYNC_SECS:-5}
STREAM_SECS=${BENCH_STREAM_SECS:-6}
SYNC_MODEL=${BENCH_SYNC_MODEL:-tokens=20}
TOKENS=${BENCH_STREAM_TOKENS:-20}
TPS_50=${BENCH_TPS_50:-50}
TPS_1000=${BENCH_TPS_1000:-10}
PIN=${BENCH_PIN:-1}
LOGS=${BENCH_LOGS:-build/bench/logs}
SSEBENCH=build/bench/ssebench
BIG=1000

say() { echo "bench: $*" >&2; }

# ---- the load generator -------------------------------------------------------------------
mkdir -p build/bench "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.kv "$LOGS"/*.conf "$LOGS"/*.ini 2>/dev/null
if [ ! -x "$SSEBENCH" ] || [ test/bench/ssebench.c -nt "$SSEBENCH" ]; then
  gcc -O2 -Wall -Wextra -o "$SSEBENCH" test/bench/ssebench.c || { say "cannot build ssebench"; exit 1; }
fi

# ---- what is installed --------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' && command -v "$2" >/dev/null; }
HAVE_NGINX=0; HAVE_WRK=0
[ "${BENCH_NO_NGINX:-0}" = 1 ] || ! installed nginx nginx || HAVE_NGINX=1
[ "${BENCH_NO_WRK:-0}" = 1 ] || ! installed wrk wrk || HAVE_WRK=1
[ $HAVE_NGINX = 1 ] || say "nginx is not installed (Debian package nginx; 'make deps' as root): the nginx column is skipped"
[ $HAVE_WRK = 1 ] || say "wrk is not installed (Debian package wrk; 'make deps' as root): sync runs use ssebench --sync"
command -v node >/dev/null || { say "node is needed for the mock provider"; exit 1; }
[ -x "$SLUICE" ] || say "$SLUICE is missing ('make' builds it): the sluice column is skipped"

# 1,000 streams through a proxy hold ~2,000 descriptors in the proxy and 1,000 here.
hard=$(ulimit -Hn)
want=65536
[ "$hard" != unlimited ] && [ "$hard" -lt $want ] && want=$hard
ulimit -n "$want" 2>/dev/null
NOFILE=$(ulimit -n)
DO_BIG=1
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((2 * BIG + 200)) ]; then
  say "ulimit -n is $NOFILE (hard limit $hard): too low for $BIG streams through a proxy; those runs are skipped"
  DO_BIG=0
fi

# ---- CPUs -------------------------------------------------------------------------------------
NCPU=$(nproc)
ON_LOAD=(); PINNING="not pinned"; LOAD_CPU=
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
  if [ "$NCPU" -ge 4 ]; then LOAD_CPU=1; PINNING="sync runs float; streams: mock on CPU $((NCPU - 1)), proxy on CPU 0, load on CPU 1"
  else LOAD_CPU=0; PINNING="sync runs float; streams: mock on CPU $((NCPU - 1)), proxy and load on CPU 0"; fi
fi
# pin_streams: move the running processes (every thread, nginx's workers too) onto their CPUs
pin_streams() {
  [ -n "$LOAD_CPU" ] || return 0
  ON_LOAD=(taskset -c "$LOAD_CPU")
  taskset -a -p -c $((NCPU - 1)) "$MOCK_PID" >/dev/null
  local p
  for p in $SLUICE_PID $NGINX_PID $( [ -n "$NGINX_PID" ] && pgrep -P "$NGINX_PID"); do
    taskset -a -p -c 0 "$p" >/dev/null 2>&1
  done
}

# ---- processes ----------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT PID: until 127.0.0.1:PORT accepts (5 s), or the process died
  local i
  for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# the mock
node test/mock/mock.js --port 0 --host 127.0.0.1 >"$TMP/mock.out" 2>"$LOGS/mock.log" &
PIDS+=($!); MOCK_PID=$!
for _ in $(seq 100); do grep -q '^listening' "$TMP/mock.out" 2>/dev/null && break; sleep 0.05; done
MOCK_PORT=$(awk '/^listening/ {print $2}' "$TMP/mock.out")
[ -n "$MOCK_PORT" ] || { say "the mock did not start:"; cat "$LOGS/mock.log" >&2; exit 1; }

# nginx in front of the same mock
NGINX_PORT=; NGINX_PID=; NGINX_STATE=
if [ $HAVE_NGINX = 1 ]; then
  NGINX_PORT=$(free_port)
  N=$TMP/nginx
  mkdir -p "$N/logs" "$N/tmp"
  user_line=; [ "$(id -u)" = 0 ] && user_line="user root;"
  cat >"$N/nginx.conf" <<EOF
$user_line
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 1024;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
    }
  }
}
EOF
  cp "$N/nginx.conf" "$LOGS/nginx.conf"
  nginx -p "$N/" -c "$N/nginx.conf" -e "$N/logs/error.log" >"$LOGS/nginx.log" 2>&1 &
  PIDS+=($!); NGINX_PID=$!
  if ! wait_port "$NGINX_PORT" "$NGINX_PID"; then
    say "nginx did not start:"; cat "$LOGS/nginx.log" "$N/logs/error.log" >&2 2>/dev/null
    NGINX_STATE="did not start"
  fi
fi

# sluice in front of the same mock
SLUICE_PORT=; SLUICE_PID=; SLUICE_STATE=
if [ -x "$SLUICE" ]; then
  SLUICE_PORT=$(free_port)
  cat >"$TMP/sluice.ini" <<EOF
[server]
listen = 127.0.0.1:$SLUICE_PORT
memory = ${BENCH_SLUICE_MEMORY:-256M}
max_connections = 4096

[provider.mock]
type = openai
base_url = http://127.0.0.1:$MOCK_PORT/v1
EOF
  cp "$TMP/sluice.ini" "$LOGS/sluice.ini"
  "$SLUICE" -c "$TMP/sluice.ini" >"$LOGS/sluice.log" 2>&1 &
  PIDS+=($!); SLUICE_PID=$!
  if ! wait_port "$SLUICE_PORT" "$SLUICE_PID"; then
    say "sluice did not start:"; tail -20 "$LOGS/sluice.log" >&2
    SLUICE_STATE="did not start"
  fi
else
  SLUICE_STATE="not built"
fi

# ---- runs ---------------------------------------------------------------------------------
TARGETS=(direct nginx sluice)
declare -A PORT=([direct]=$MOCK_PORT [nginx]=$NGINX_PORT [sluice]=$SLUICE_PORT)
declare -A PREFIX=([direct]= [nginx]= [sluice]=mock/)
declare -A STATE=([direct]= [nginx]=$NGINX_STATE [sluice]=$SLUICE_STATE)
[ $HAVE_NGINX = 1 ] || STATE[nginx]="not installed"
declare -A R  # R[target.run.key] = value

# load KV-FILE PREFIX: key=value lines into R
load() { local k v; while IFS='=' read -r k v; do [ -n "$k" ] && R["$2.$k"]=$v; done <"$1"; }

# wrk's report → the keys ssebench --kv prints (ms)
wrk_kv() {
  awk '
    function ms(s) { if (s ~ /us$/) return s * 0.001; if (s ~ /ms$/) return s + 0;
                     if (s ~ /m$/) return s * 60000; if (s ~ /s$/) return s * 1000; return s + 0 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /requests in/ { total = $1 }
    /Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $5 }
    /Socket errors:/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
    END { err = non2xx + sock; printf "ok=%d\nerrors=%d\nrps=%s\nlat_p50=%.3f\nlat_p99=%.3f\nstatuses=%s\n",
          total - non2xx, err, rps, p50, p99, non2xx ? "non-2xx:" non2xx : "-" }'
}

# sync TARGET CONC
sync_run() {
  local t=$1 c=$2 id="$1.sync$2" url="http://127.0.0.1:${PORT[$1]}/v1/chat/completions"
  local model="${PREFIX[$t]}$SYNC_MODEL"
  if [ $HAVE_WRK = 1 ]; then
    cat >"$TMP/$t.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"$model","messages":[{"role":"user","content":"hi"}],"stream":false}'
wrk.headers["Content-Type"] = "application/json"
EOF
    timeout -k 5 30 ${ON_LOAD[@]+"${ON_LOAD[@]}"} wrk -t1 -c"$c" -d1s -s "$TMP/$t.lua" "$url" >/dev/null 2>&1  # warm-up
    timeout -k 5 $((SYNC_SECS + 30)) ${ON_LOAD[@]+"${ON_LOAD[@]}"} wrk -t1 -c"$c" -d"${SYNC_SECS}s" --timeout 5s --latency \
      -s "$TMP/$t.lua" "$url" >"$LOGS/$id.log" 2>&1
    wrk_kv <"$LOGS/$id.log" >"$LOGS/$id.kv"
  else
    timeout -k 5 $((SYNC_SECS + 30)) ${ON_LOAD[@]+"${ON_LOAD[@]}"} "$SSEBENCH" -a "127.0.0.1:${PORT[$t]}" -c "$c" -w 1 -d "$SYNC_SECS" \
      --sync -m "$model" --timeout 5000 --kv -v >"$LOGS/$id.kv" 2>"$LOGS/$id.log"
  fi
  load "$LOGS/$id.kv" "$id"
}

# stream TARGET CONC TPS WARMUP
stream_run() {
  local t=$1 c=$2 tps=$3 w=$4 id="$1.stream$2"
  local gap=$((1000 / tps)) model="${PREFIX[$t]}tokens=$TOKENS,tps=$tps"
  timeout -k 5 $((w + STREAM_SECS + 30)) ${ON_LOAD[@]+"${ON_LOAD[@]}"} "$SSEBENCH" -a "127.0.0.1:${PORT[$t]}" -c "$c" -w "$w" \
    -d "$STREAM_SECS" -m "$model" --stall-ms $((2 * gap)) --timeout 15000 --connect-burst 128 --kv -v \
    >"$LOGS/$id.kv" 2>"$LOGS/$id.log"
  load "$LOGS/$id.kv" "$id"
}

# a target answers at all? One request of each kind, before its runs.
probe() { # TARGET MODE(sync|stream) → sets STATE when it fails
  local t=$1 f="$LOGS/$1.probe-$2.kv" flag=
  [ "$2" = sync ] && flag=--sync
  "$SSEBENCH" -a "127.0.0.1:${PORT[$t]}" -c 1 -n 1 $flag -m "${PREFIX[$t]}tokens=3" --timeout 5000 \
    --kv >"$f" 2>/dev/null
  grep -q '^ok=1$' "$f" && return 0
  local s
  s=$(sed -n 's/^statuses=//p' "$f" | sed 's/:[0-9]*//g')
  if [ -n "$s" ] && [ "$s" != - ]; then R["$t.probe_$2"]="HTTP $s"
  else R["$t.probe_$2"]=$(grep '^err_.*=[1-9]' "$f" | sed 's/^err_//; s/=.*//' | tr '\n' ' ' | sed 's/ $//')
       [ -n "${R[$t.probe_$2]}" ] || R["$t.probe_$2"]="no answer"; fi
  return 1
}

# a proxy that died under load is a finding, not a reason to stop: its later cells say so
alive_check() {
  local t p
  for t in nginx sluice; do
    p=$([ $t = nginx ] && echo "$NGINX_PID" || echo "$SLUICE_PID")
    if [ -n "$p" ] && [ -z "${STATE[$t]}" ] && ! kill -0 "$p" 2>/dev/null; then
      STATE[$t]="died during $1"; say "$t died during $1: see $LOGS/$t.log"
    fi
  done
}
runnable() { [ -z "${STATE[$1]}" ] && [ -n "${PORT[$1]}" ]; }

# warm the mock's JIT before anything is measured
"$SSEBENCH" -a "127.0.0.1:$MOCK_PORT" -c 20 -d 1 --sync -m "$SYNC_MODEL" >/dev/null 2>&1
"$SSEBENCH" -a "127.0.0.1:$MOCK_PORT" -c 50 -d 1 -m "tokens=$TOKENS,tps=100" >/dev/null 2>&1

T0=$(date +%s)
say "mock :$MOCK_PORT  nginx :${NGINX_PORT:--}  sluice :${SLUICE_PORT:--}  (logs in $LOGS)"
for mode in sync stream; do
  for t in "${TARGETS[@]}"; do
    runnable "$t" && ! probe "$t" $mode && say "$t fails a single $mode request (${R[$t.probe_$mode]}): its $mode runs are skipped"
  done
  if [ $mode = sync ]; then
    for c in 1 50; do
      for t in "${TARGETS[@]}"; do
        runnable "$t" && [ -z "${R[$t.probe_sync]:-}" ] && { say "sync c=$c $t"; sync_run "$t" "$c"; }
        alive_check "sync c=$c"
      done
    done
  else
    pin_streams
    for c in 50 $BIG; do
      [ "$c" = $BIG ] && [ $DO_BIG = 0 ] && continue
      tps=$TPS_50 w=1; [ "$c" = $BIG ] && tps=$TPS_1000 w=2
      for t in "${TARGETS[@]}"; do
        runnable "$t" && [ -z "${R[$t.probe_stream]:-}" ] && { say "streams c=$c $t"; stream_run "$t" "$c" "$tps" "$w"; }
        alive_check "streams c=$c"
      done
    done
  fi
done
# peak RSS, read while the processes still run
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null; }
[ -n "$SLUICE_PID" ] && R[sluice.hwm_kb]=$(hwm "$SLUICE_PID")
if [ -n "$NGINX_PID" ]; then
  wk=0; for p in $(pgrep -P "$NGINX_PID"); do v=$(hwm "$p"); [ -n "$v" ] && [ "$v" -gt "$wk" ] && wk=$v; done
  [ "$wk" -gt 0 ] && R[nginx.hwm_kb]=$wk
fi
R[direct.hwm_kb]=$(hwm "$MOCK_PID")
ELAPSED=$(( $(date +%s) - T0 ))

# ---- the table ----------------------------------------------------------------------------
get() { echo "${R[$1]:-}"; }
f() { awk -v x="$1" 'BEGIN { if (x == "" || x < 0) print "–"; else if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'; }
fsigned() { awk -v x="$1" 'BEGIN { if (x == "") print "–"; else printf "%+.2f", x }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a < 0 || b < 0) print ""; else printf "%.3f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b < 0.005) print "–"; else printf "%.2f×", a / b }'; }

# cell TARGET RUNID: why there is no figure, or empty when there is one
why() {
  local t=$1 id=$2 mode=$3
  if [ -n "${R[$t.$id.ok]:-}" ]; then
    [ "${R[$t.$id.ok]}" = 0 ] && echo "FAILED (${R[$t.$id.errors]} errors, ${R[$t.$id.statuses]})"
    return
  fi
  if [ -n "${STATE[$t]}" ]; then echo "${STATE[$t]}"; return; fi
  if [ -n "${R[$t.probe_$mode]:-}" ]; then echo "failed: ${R[$t.probe_$mode]}"; return; fi
  echo "not run"
}
# row LABEL CELL-FUNCTION RUNID MODE [RATIO-FUNCTION]
row() {
  local label=$1 fn=$2 id=$3 mode=$4 rfn=${5:-} t cells=() w
  for t in "${TARGETS[@]}"; do
    w=$(why "$t" "$id" "$mode")
    if [ -n "$w" ]; then cells+=("$w"); else cells+=("$($fn "$t" "$id")"); fi
  done
  local r=
  if [ -n "$rfn" ] && [ -z "$(why nginx "$id" "$mode")" ] && [ -z "$(why sluice "$id" "$mode")" ]; then r=$($rfn "$id"); fi
  printf '| %s | %s | %s | %s | %s |\n' "$label" "${cells[0]}" "${cells[1]}" "${cells[2]}" "${r:-}"
}
c_rps() { f "$(get "$1.$2.rps")"; }
c_okerr() { echo "$(get "$1.$2.ok") / $(get "$1.$2.errors")"; }
c_lat() { echo "$(f "$(get "$1.$2.lat_p50")") / $(f "$(get "$1.$2.lat_p99")")"; }
c_added_lat() {
  [ "$1" = direct ] && { echo "—"; return; }
  echo "$(fsigned "$(sub "$(get "$1.$2.lat_p50")" "$(get "direct.$2.lat_p50")")") / $(fsigned "$(sub "$(get "$1.$2.lat_p99")" "$(get "direct.$2.lat_p99")")")"
}
r_added() { # RUNID KEY-PREFIX
  local k=$2 a b
  a=$(ratio "$(sub "$(get "sluice.$1.${k}_p50")" "$(get "direct.$1.${k}_p50")")" "$(sub "$(get "nginx.$1.${k}_p50")" "$(get "direct.$1.${k}_p50")")")
  b=$(ratio "$(sub "$(get "sluice.$1.${k}_p99")" "$(get "direct.$1.${k}_p99")")" "$(sub "$(get "nginx.$1.${k}_p99")" "$(get "direct.$1.${k}_p99")")")
  echo "$a / $b"
}
r_added_lat() { r_added "$1" lat; }
r_added_ttfb() { r_added "$1" ttfb; }
c_ttfb() { echo "$(f "$(get "$1.$2.ttfb_p50")") / $(f "$(get "$1.$2.ttfb_p99")")"; }
c_ttft() { echo "$(f "$(get "$1.$2.ttft_p50")") / $(f "$(get "$1.$2.ttft_p99")")"; }
c_added_ttfb() {
  [ "$1" = direct ] && { echo "—"; return; }
  echo "$(fsigned "$(sub "$(get "$1.$2.ttfb_p50")" "$(get "direct.$2.ttfb_p50")")") / $(fsigned "$(sub "$(get "$1.$2.ttfb_p99")" "$(get "direct.$2.ttfb_p99")")")"
}
c_gap() { echo "$(f "$(get "$1.$2.gap_p50")") / $(f "$(get "$1.$2.gap_p99")") / $(f "$(get "$1.$2.gap_max")")"; }
c_stalls() {
  local s; s=$(get "$1.$2.stalls")
  if [ "$s" = 0 ]; then echo "none"; else echo "**$s** of $(get "$1.$2.gaps")"; fi
}
c_streams() {
  local e s; e=$(get "$1.$2.errors")
  s=$(get "$1.$2.statuses" | tr ',' '\n' | grep -v '^200:' | sed 's/:/×/' | tr '\n' ' ' | sed 's/ $//')
  echo "$(get "$1.$2.ok") ok, $([ "$e" = 0 ] && echo 0 || echo "**$e**") err${s:+ ($s)}, $(f "$(get "$1.$2.rps")")/s"
}
c_hwm() { local v; v=$(get "$1.hwm_kb"); [ -n "$v" ] && awk -v k="$v" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "–"; }

echo
echo "## sluice bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet -- src 2>/dev/null || echo '+dirty')"
echo
echo "mock = test/mock/mock.js (Node $(node -v)); CPUs: $PINNING; nginx $( [ $HAVE_NGINX = 1 ] && echo "$(nginx -v 2>&1 | sed 's/.*\///'), 1 worker, proxy_buffering off, upstream keep-alive" || echo "not installed");"
echo "sync load: $( [ $HAVE_WRK = 1 ] && echo "wrk -t1" || echo "ssebench --sync"), model \`$SYNC_MODEL\`, ${SYNC_SECS}s per run; streams: ssebench, \`tokens=$TOKENS\`, ${STREAM_SECS}s per run. Times in ms; \"added\" = proxy minus direct."
echo
echo "| | mock direct | nginx | sluice | sluice/nginx (added) |"
echo "|---|---|---|---|---|"
for c in 1 50; do
  row "sync c=$c: requests/s" c_rps "sync$c" sync
  row "sync c=$c: latency p50 / p99" c_lat "sync$c" sync
  row "sync c=$c: **added** latency p50 / p99" c_added_lat "sync$c" sync r_added_lat
  row "sync c=$c: ok / errors" c_okerr "sync$c" sync
done
for c in 50 $BIG; do
  tps=$TPS_50; [ "$c" = $BIG ] && tps=$TPS_1000
  g=$((1000 / tps))
  if [ "$c" = $BIG ] && [ $DO_BIG = 0 ]; then
    echo "| streams c=$c | skipped: ulimit -n $NOFILE | | | |"; continue
  fi
  row "streams c=$c (gap ${g} ms): TTFB p50 / p99" c_ttfb "stream$c" stream
  row "streams c=$c: **added** TTFB p50 / p99" c_added_ttfb "stream$c" stream r_added_ttfb
  row "streams c=$c: TTFT p50 / p99" c_ttft "stream$c" stream
  row "streams c=$c: gap p50 / p99 / max" c_gap "stream$c" stream
  row "streams c=$c: stalled gaps (> $((2 * g)) ms)" c_stalls "stream$c" stream
  row "streams c=$c: streams" c_streams "stream$c" stream
done
hwm_cell() {
  if [ -z "$(get "$1.hwm_kb")" ]; then echo "${STATE[$1]:-–}"; return; fi
  if [ -z "$(get "$1.stream$BIG.ok")" ]; then echo "$(c_hwm "$1") (no $BIG-stream run)"; else c_hwm "$1"; fi
}
printf '| peak RSS (VmHWM) at the end | %s (the mock) | %s (worker) | %s | |\n' \
  "$(hwm_cell direct)" "$(hwm_cell nginx)" "$(hwm_cell sluice)"
if [ -n "$SLUICE_PORT" ] && health=$(curl -s "http://127.0.0.1:$SLUICE_PORT/healthz" 2>/dev/null); then
  # The arena's own high-water mark: what the memory setting must hold at this load.
  printf '| sluice memory high-water (of %s reserved) | | | %s KiB | |\n' "${BENCH_SLUICE_MEMORY:-256M}" \
    "$(printf '%s' "$health" | sed -n 's/.*"high_water":\([0-9]*\).*/\1/p' | awk '{printf "%d", $1 / 1024}')"
fi
# CPU per proxied request, counted (test/bench/cgproxy.sh): the deterministic side of the
# latency ratio, which on a shared 2-core machine is mostly noise.
if command -v valgrind >/dev/null && [ -x "$SLUICE" ]; then
  declare -A CG
  while IFS='=' read -r k v; do [ -n "$k" ] && CG[$k]=$v; done < <(test/bench/cgproxy.sh "$MOCK_PORT" "$SLUICE" "$LOGS" "${BENCH_CG_REQUESTS:-1000}" 2>>"$LOGS/cgproxy.err")
  printf '| CPU per proxied sync request (callgrind instructions) | | %s | %s | %s |\n' "${CG[nginx.ir]:-–}" "${CG[sluice.ir]:-–}" \
    "$(awk -v a="${CG[sluice.ir]:-}" -v b="${CG[nginx.ir]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.1fx", a / b }')"
  # libcurl alone making the same requests (test/bench/curlfloor.c): the floor under sluice's
  # figure, as long as libcurl is the upstream client.
  printf '| libcurl alone making the same requests, the floor under the sluice figure (callgrind instructions) | | | %s | %s of nginx |\n' "${CG[curl.ir]:-–}" \
    "$(awk -v a="${CG[curl.ir]:-}" -v b="${CG[nginx.ir]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.1fx", a / b }')"
fi
echo
echo "Measured in ${ELAPSED}s. Raw output of every run: $LOGS/. Noisy on few cores: compare ratios, not absolutes."

# ---- the cost of translation (issue 6 point 9) ----------------------------------------------
# build/x86_64/xlbench replays recorded provider streams (test/fixtures) through a real exchange
# into a sink that only counts, one upstream SSE event per feed. ns: wall clock, best of 5 runs.
# Instructions: valgrind --tool=callgrind (the same count on a noisy machine).
# Per chunk, what the target (5,000 instructions per translated stream chunk) is judged on: one
# more content event in a running stream, the text fixture's first content event fed K + 1
# times minus fed once, over K.
# Whole exchanges, for the per-stream costs: (Ir of K iterations − Ir of 1) / ((K − 1) × events
# per iteration), process start-up excluded, each exchange's set-up, role chunk, finish, usage
# chunk, [DONE] and release included: once per stream, not per chunk, and spread here over very
# few events (Gemini's recorded streams have 1 or 2). Also the stream path alone: a run with
# collection on only inside exchange_feed and exchange_upstream_done, over K × events.
XLBENCH=${XLBENCH:-build/x86_64/xlbench}
XL_ITERS=${BENCH_XL_ITERS:-200}
declare -A XL
if [ -x "$XLBENCH" ]; then
  if "$XLBENCH" >"$LOGS/xlbench.kv" 2>"$LOGS/xlbench.log"; then
    while IFS='=' read -r k v; do [ -n "$k" ] && XL[$k]=$v; done <"$LOGS/xlbench.kv"
  else
    say "xlbench failed: see $LOGS/xlbench.log"
  fi
  if command -v valgrind >/dev/null; then
    for m in anthropic gemini openai; do
      for k in 1 "$XL_ITERS"; do
        valgrind --tool=callgrind --callgrind-out-file="$LOGS/callgrind.$m.$k.out" "$XLBENCH" "$m" "$k" \
          >"$LOGS/callgrind.$m.$k.kv" 2>"$LOGS/callgrind.$m.$k.log" || say "callgrind $m $k failed: see $LOGS/callgrind.$m.$k.log"
      done
      a=$(sed -n 's/^summary: *//p' "$LOGS/callgrind.$m.1.out" 2>/dev/null)
      b=$(sed -n 's/^summary: *//p' "$LOGS/callgrind.$m.$XL_ITERS.out" 2>/dev/null)
      e=$(sed -n "s/^$m.events=//p" "$LOGS/callgrind.$m.1.kv" 2>/dev/null)
      c=$(sed -n "s/^$m.chunks=//p" "$LOGS/callgrind.$m.1.kv" 2>/dev/null)
      valgrind --tool=callgrind --toggle-collect=exchange_feed --toggle-collect=exchange_upstream_done \
        --callgrind-out-file="$LOGS/callgrind.$m.stream.out" "$XLBENCH" "$m" "$XL_ITERS" \
        >/dev/null 2>"$LOGS/callgrind.$m.stream.log" || say "callgrind $m stream path failed: see $LOGS/callgrind.$m.stream.log"
      s=$(sed -n 's/^summary: *//p' "$LOGS/callgrind.$m.stream.out" 2>/dev/null)
      for k in 1 $((XL_ITERS + 1)); do
        valgrind --tool=callgrind --callgrind-out-file="$LOGS/callgrind.$m-mid.$k.out" "$XLBENCH" "$m-mid" "$k" \
          >/dev/null 2>"$LOGS/callgrind.$m-mid.$k.log" || say "callgrind $m-mid $k failed: see $LOGS/callgrind.$m-mid.$k.log"
      done
      ma=$(sed -n 's/^summary: *//p' "$LOGS/callgrind.$m-mid.1.out" 2>/dev/null)
      mb=$(sed -n 's/^summary: *//p' "$LOGS/callgrind.$m-mid.$((XL_ITERS + 1)).out" 2>/dev/null)
      [ -n "$ma" ] && [ -n "$mb" ] && XL[$m.ir_mid]=$(awk -v a="$ma" -v b="$mb" -v k="$XL_ITERS" 'BEGIN { printf "%.0f", (b - a) / k }')
      if [ -n "$a" ] && [ -n "$b" ] && [ -n "$e" ] && [ "$XL_ITERS" -gt 1 ]; then
        XL[$m.ir_per_event]=$(awk -v a="$a" -v b="$b" -v k="$XL_ITERS" -v e="$e" 'BEGIN { printf "%.0f", (b - a) / ((k - 1) * e) }')
        [ -n "$s" ] && XL[$m.ir_stream]=$(awk -v s="$s" -v k="$XL_ITERS" -v e="$e" 'BEGIN { printf "%.0f", s / (k * e) }')
        XL[$m.ir_per_chunk_out]=$(awk -v a="$a" -v b="$b" -v k="$XL_ITERS" -v c="$c" 'BEGIN { printf "%.0f", (b - a) / ((k - 1) * c) }')
      fi
    done
  else
    say "valgrind is not installed ('vendor/deps.sh test' installs it): instructions per chunk are skipped"
    XL[skip]="valgrind not installed"
  fi
else
  say "$XLBENCH is missing ('make $XLBENCH' builds it): the cost of translation is skipped"
fi
xl_row() { # NAME
  local m=$1 ir=${XL[$1.ir_mid]:-} verdict=
  [ -n "$ir" ] && { [ "$ir" -lt 5000 ] && verdict="under the 5,000 target" || verdict="**over** the 5,000 target"; }
  [ "$m" = openai ] && verdict="(not a translation)"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${XL[$m.label]:-$m}" \
    "${XL[$m.ns_mid]:-–} / ${ir:-${XL[skip]:-–}} (${XL[$m.mid_bytes]:-–} B)" "${verdict:-–}" \
    "${XL[$m.ns_per_event]:-–} / ${XL[$m.ir_per_event]:-–}" "${XL[$m.ir_stream]:-–}" \
    "${XL[$m.events]:-–} in (${XL[$m.bytes_in]:-–} B) → ${XL[$m.chunks]:-–} out (${XL[$m.bytes_out]:-–} B)" \
    "${XL[$m.ns_per_chunk_out]:-–} / ${XL[$m.ir_per_chunk_out]:-–}" \
    "$(awk -v i="${XL[$m.ir_per_event]:-}" -v n="${XL[$m.bytes_in]:-}" -v e="${XL[$m.events]:-}" 'BEGIN { if (i == "" || n == "" || e == "") print "–"; else printf "%.0f", i * e / n }')"
}
if [ -x "$XLBENCH" ]; then
  echo
  echo "Cost of translation ($XLBENCH: test/fixtures streams replayed through a real exchange into a counting sink, one upstream event per feed; instructions by callgrind). Per chunk: one more content event in a running stream (the text fixture's first content event fed $XL_ITERS more times, over $XL_ITERS), against the target of 5,000 instructions per translated chunk. Whole exchanges: $XL_ITERS iterations minus 1 over the recorded streams, each exchange's set-up, role chunk, finish, usage chunk, [DONE] and release spread over its upstream events (Gemini's recorded streams have 1 or 2), and the stream path alone (feed and end):"
  echo
  echo "| translation | per chunk: ns / instructions (its size) | target (per chunk) | whole exchanges: ns / instructions per upstream event | of which the stream path | events per iteration → chunks out | whole exchanges: ns / instructions per chunk out | instructions per input byte |"
  echo "|---|---|---|---|---|---|---|---|"
  xl_row anthropic
  xl_row gemini
  xl_row openai
fi
exit 0
