#!/bin/bash
# The CPU cost of one proxied sync request, counted by valgrind --tool=callgrind (the same
# count on a noisy machine, where the latency figures are not): nginx and sluice each run under
# callgrind in front of the same mock, a client sends 1 and then N requests one after another on
# one keep-alive connection; (Ir(N) - Ir(1)) / (N - 1) is one request, start-up excluded.
#   test/bench/cgproxy.sh MOCK_PORT SLUICE_BIN LOGDIR [N]   prints nginx.ir=, sluice.ir= and curl.ir=
# curl.ir is libcurl alone (CURLFLOOR, default build/x86_64/curlfloor: test/bench/curlfloor.c, the
# same libcurl and allocator, nothing of sluice) doing the same requests: the floor of any
# gateway whose upstream client is libcurl.
# (nginx: one worker, no master, proxy_buffering off, upstream keep-alive, as in run.sh).
set -u
MOCK_PORT=$1 SLUICE=$2 LOGS=$3 N=${4:-1000}
TMP=$(mktemp -d /tmp/sluice-cgproxy.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CLIENT PORT MODEL COUNT: sequential requests on one connection; exit 1 unless every one is a 200
client() {
  python3 - "$1" "$2" "$3" <<'PY'
import re, socket, sys
port, model, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = ('{"model":"%s","messages":[{"role":"user","content":"hi"}],"stream":false}' % model).encode()
req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" \
      b"Content-Length: %d\r\n\r\n" % len(body) + body
s = socket.create_connection(("127.0.0.1", port), timeout=30)
for _ in range(n):
    s.sendall(req)
    buf = b""
    while True:
        more = s.recv(65536)
        if not more:
            sys.exit("connection closed")
        buf += more
        h = buf.find(b"\r\n\r\n")
        m = h >= 0 and re.search(rb"(?i)\r\ncontent-length: *(\d+)", buf[:h + 2])
        if m and len(buf) >= h + 4 + int(m.group(1)):
            break
    if not buf.startswith(b"HTTP/1.1 200"):
        sys.exit("not a 200: %r" % buf[:200])
PY
}

wait_port() { local i; for i in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }

# RUN NAME PORT MODEL COUNT CMD...: the command under callgrind, COUNT requests, then stopped
run() {
  local name=$1 port=$2 model=$3 count=$4 pid
  shift 4
  valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.$count.out" "$@" >"$LOGS/cgproxy.$name.$count.log" 2>&1 &
  pid=$!
  wait_port "$port" && client "$port" "$model" "$count" >>"$LOGS/cgproxy.$name.$count.log" 2>&1
  local rc=$?
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # exits as it would
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return $rc
}

# NAME PORT MODEL CMD...: print NAME.ir=
measure() {
  local name=$1 port=$2 model=$3 a b
  shift 3
  if run "$name" "$port" "$model" 1 "$@" && run "$name" "$port" "$model" "$N" "$@"; then
    a=$(sed -n 's/^summary: *//p' "$TMP/$name.1.out"); b=$(sed -n 's/^summary: *//p' "$TMP/$name.$N.out")
    [ -n "$a" ] && [ -n "$b" ] && echo "$name.ir=$(( (b - a) / (N - 1) ))"
  else
    echo "cgproxy: $name failed: see $LOGS/cgproxy.$name.*.log" >&2
  fi
}

if command -v nginx >/dev/null; then
  NP=$(free_port)
  mkdir -p "$TMP/ngx/logs" "$TMP/ngx/tmp"
  user_line=; [ "$(id -u)" = 0 ] && user_line="user root;"
  cat >"$TMP/ngx/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
master_process off;
pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/ngx/tmp/body;
  proxy_temp_path $TMP/ngx/tmp/proxy;
  fastcgi_temp_path $TMP/ngx/tmp/fastcgi;
  uwsgi_temp_path $TMP/ngx/tmp/uwsgi;
  scgi_temp_path $TMP/ngx/tmp/scgi;
  keepalive_requests 1000000;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
  measure nginx "$NP" "tokens=5" nginx -p "$TMP/ngx/" -c "$TMP/ngx/nginx.conf" -e "$TMP/ngx/logs/error.log"
fi

SP=$(free_port)
printf '[server]\nlisten = 127.0.0.1:%s\nmemory = 64M\n[provider.mock]\ntype = openai\nbase_url = http://127.0.0.1:%s/v1\n' \
  "$SP" "$MOCK_PORT" >"$TMP/sluice.ini"
measure sluice "$SP" "mock/tokens=5" "$SLUICE" -c "$TMP/sluice.ini"

# libcurl alone: not a server, so run directly, 1 and N requests
CURLFLOOR=${CURLFLOOR:-build/x86_64/curlfloor}
if [ -x "$CURLFLOOR" ]; then
  for k in 1 "$N"; do
    valgrind --tool=callgrind --callgrind-out-file="$TMP/curl.$k.out" "$CURLFLOOR" "$MOCK_PORT" "$k" \
      >"$LOGS/cgproxy.curl.$k.log" 2>&1 || { echo "cgproxy: curlfloor failed: see $LOGS/cgproxy.curl.$k.log" >&2; exit 0; }
  done
  a=$(sed -n 's/^summary: *//p' "$TMP/curl.1.out"); b=$(sed -n 's/^summary: *//p' "$TMP/curl.$N.out")
  [ -n "$a" ] && [ -n "$b" ] && echo "curl.ir=$(( (b - a) / (N - 1) ))"
fi
