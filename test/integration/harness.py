"""harness.py — what the integration tests share: start the real binary on a free loopback port
with its own config, speak raw HTTP/1.1 to it, and check what comes back.

Everything is bounded by a timeout. Servers and connections a test opens are recorded here, so
the runner (run.py) can stop the servers after the test, look for sanitizer reports in their
stderr, and show stderr and the bytes exchanged when a test fails.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("SLUICE_BIN", "build/x86_64/sluice")
SAN_PATTERN = re.compile(r"ERROR: \w*Sanitizer|runtime error:")

# What the current test opened; run.py cleans these up between tests.
servers = []
conns = []
tmpdirs = []


class Failure(AssertionError):
    pass


def fail(msg):
    raise Failure(msg)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def eq(got, want, what):
    if got != want:
        raise Failure(f"{what}: expected {want!r}, got {got!r}")


# ----------------------------------------------------------------------------------------------
# The server under test

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


SERVER_DEFAULTS = {
    "memory": "16M",
    "max_connections": "256",
    "max_request_body": "1M",
    "max_header": "8K",
    "header_timeout": "5s",
    "idle_timeout": "10s",
    "drain_timeout": "1s",
    "log_format": "plain",
}

# The models, routes and provider every test config has. Nothing listens on port 9: a request
# that really goes upstream fails to connect (not before the upstream issue lands).
CATALOG = """
[provider.local]
type = openai
base_url = http://127.0.0.1:9/v1
api_key = x

[model.alpha]
targets = local/upstream-alpha

[model.beta]
targets = local/upstream-beta

[route.cheap]
policy = cost
candidates = local/m1
"""
MODEL_NAMES = ["alpha", "beta"]
ROUTE_NAMES = ["cheap"]
PROVIDER_NAME = "local"


def make_config(port, server=None, extra=CATALOG):
    """A config text: [server] with the defaults above overridden by `server` (a value of None
    drops the key), then `extra` (the catalog by default)."""
    keys = dict(SERVER_DEFAULTS)
    keys["listen"] = f"127.0.0.1:{port}"
    for k, v in (server or {}).items():
        if v is None:
            keys.pop(k, None)
        else:
            keys[k] = v
    lines = ["[server]"] + [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n" + extra


def tmpdir():
    d = tempfile.mkdtemp(prefix="sluice-it-")
    tmpdirs.append(d)
    return d


def write_file(name, text):
    d = tmpdir()
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def run_cli(args, timeout=10, env=None):
    """Run the binary to completion (for CLI tests): (exit code, stdout, stderr)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    try:
        p = subprocess.run([BIN] + args, capture_output=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        fail(f"`sluice {' '.join(args)}` did not exit within {timeout}s")
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if SAN_PATTERN.search(err):
        fail(f"sanitizer report from `sluice {' '.join(args)}`:\n{err[-3000:]}")
    return p.returncode, out, err


class Server:
    """The binary running `sluice -c FILE` (plus `args`) on a free port. Use as a context
    manager or call start()/stop(); run.py stops whatever a test left running."""

    def __init__(self, server=None, extra=CATALOG, args=(), env=None, port=None, config=None,
                 wait=True):
        self.port = port or free_port()
        self.config_text = config if config is not None else make_config(self.port, server, extra)
        self.args = list(args)
        self.env = env
        self.proc = None
        self.wait = wait
        self.stopped = False
        self.killed = False
        self.exit_expected = False
        self.exit_code = None
        self.dir = tmpdir()
        self.config_path = os.path.join(self.dir, "sluice.ini")
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stdout_path = os.path.join(self.dir, "stdout")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if self.env:
            e.update(self.env)
        self.errf = open(self.stderr_path, "wb")
        self.outf = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([BIN, "-c", self.config_path] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=self.outf,
                                     stderr=self.errf, env=e)
        servers.append(self)
        if self.wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.exit_expected = True       # reported here, not again at teardown
                fail(f"server exited with {self.proc.returncode} before listening on port "
                     f"{self.port}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        fail(f"server did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.exit_expected = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """The exit code, or None if it still runs after `timeout` seconds."""
        self.exit_expected = True
        try:
            self.exit_code = self.proc.wait(timeout)
            return self.exit_code
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=5):
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.stopped or self.proc is None:
            return self.exit_code
        self.stopped = True
        for c in conns:             # the test is over: its clients go first
            if c.port == self.port:
                c.close()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode
        self.errf.close()
        self.outf.close()
        return self.exit_code

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def sanitizer_report(self):
        m = SAN_PATTERN.search(self.stderr())
        return m is not None

    # conveniences
    def connect(self, timeout=5, rcvbuf=None):
        return Conn(self.port, timeout, rcvbuf)

    def request(self, method, path, headers=None, body=None, timeout=5):
        """One request on a fresh connection; returns the response."""
        c = self.connect(timeout)
        try:
            c.send_request(method, path, headers, body)
            return c.read_response(timeout)
        finally:
            c.close()

    def get(self, path, headers=None, timeout=5):
        return self.request("GET", path, headers, None, timeout)

    def chat(self, body, headers=None, timeout=5):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", "/v1/chat/completions", h, body, timeout)

    def log_lines(self):
        return [l for l in self.stderr().splitlines() if l.strip()]

    def wait_log(self, needle, timeout=2):
        """The first stderr line containing needle (waits for it to be written)."""
        end = time.monotonic() + timeout
        while True:
            for l in self.log_lines():
                if needle in l:
                    return l
            if time.monotonic() > end:
                return None
            time.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# Raw HTTP on a socket

class Closed(Exception):
    pass


class Response:
    def __init__(self):
        self.version = self.reason = ""
        self.status = 0
        self.headers = []     # (lowercased name, value)
        self.body = b""
        self.raw = b""
        self.framing = None   # "length", "chunked", "close" or "none"

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            fail(f"{self.status} response body is not JSON ({e}): {self.body[:300]!r}")

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.raw[:400]!r}>"


def build_request(method, path, headers=None, body=None, version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": "127.0.0.1"}
    h.update(headers or {})
    lower = {k.lower() for k in h}
    if body is not None and "content-length" not in lower and "transfer-encoding" not in lower:
        h["Content-Length"] = str(len(body))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def chunked(*parts):
    """A chunked body from the given byte strings, with the last chunk."""
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n\r\n"


class Conn:
    """A client connection with a read buffer, so that pipelined responses can be read one by
    one. `sent` and `received` keep the whole exchange for failure reports."""

    def __init__(self, port, timeout=5, rcvbuf=None):
        self.port = port
        self.buf = b""
        self.sent = b""
        self.received = b""
        self.eof = False
        if rcvbuf:      # a fixed, small receive buffer (set before connect: no autotuning)
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one send, one segment
        self.sock.settimeout(timeout)
        conns.append(self)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sent += data
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, ignoring a connection the server already closed; True if it all went."""
        try:
            self.send(data)
            return True
        except OSError:
            return False

    def send_request(self, method, path, headers=None, body=None, version="HTTP/1.1"):
        self.send(build_request(method, path, headers, body, version))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def _fill(self, deadline):
        """Read more bytes into buf; raises Closed on EOF/RST, socket.timeout at the deadline."""
        if self.eof:
            raise Closed()
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof = True
            raise Closed()
        if not d:
            self.eof = True
            raise Closed()
        self.buf += d
        self.received += d

    def _take_line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_response(self, timeout=5, head_only=False):
        """One response (a 1xx interim one included). Fails the test on a timeout or if the
        connection closes before a whole response."""
        deadline = time.monotonic() + timeout
        start_len = len(self.received) - len(self.buf)
        r = Response()
        try:
            line = self._take_line(deadline)
            parts = line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                fail(f"bad status line {line!r}")
            r.version, r.status = parts[0], int(parts[1])
            r.reason = parts[2] if len(parts) > 2 else ""
            while True:
                line = self._take_line(deadline)
                if not line:
                    break
                if b":" not in line:
                    fail(f"bad response header line {line!r}")
                k, v = line.split(b":", 1)
                r.headers.append((k.decode("latin-1").strip().lower(), v.decode("latin-1").strip()))
            if head_only or 100 <= r.status < 200 or r.status in (204, 304):
                r.framing = "none"
            elif (r.header("transfer-encoding") or "").lower() == "chunked":
                r.framing = "chunked"
                body = b""
                while True:
                    size = int(self._take_line(deadline).split(b";")[0], 16)
                    if size == 0:
                        while self._take_line(deadline):
                            pass
                        break
                    body += self._take(size, deadline)
                    self._take_line(deadline)
                r.body = body
            elif r.header("content-length") is not None:
                r.framing = "length"
                r.body = self._take(int(r.header("content-length")), deadline)
            else:
                r.framing = "close"
                try:
                    while True:
                        self._fill(deadline)
                except Closed:
                    pass
                r.body, self.buf = self.buf, b""
        except Closed:
            got = self.received[start_len:]
            fail(f"connection closed before a whole response; got {got[:300]!r}")
        except socket.timeout:
            got = self.received[start_len:]
            fail(f"no whole response within {timeout}s; got {got[:300]!r}")
        r.raw = self.received[start_len:len(self.received) - len(self.buf)]
        return r

    def wait_closed(self, timeout):
        """Wait for the server to close. Returns (closed, extra bytes received meanwhile)."""
        deadline = time.monotonic() + timeout
        extra = self.buf
        self.buf = b""
        while True:
            try:
                self._fill(deadline)
            except Closed:
                return True, extra + self.buf
            except socket.timeout:
                return False, extra + self.buf
            except OSError:
                return True, extra + self.buf

    def expect_closed(self, timeout=2, what="the server closes the connection"):
        closed, extra = self.wait_closed(timeout)
        check(not extra, f"{what}: expected no more bytes, got {extra[:300]!r}")
        check(closed, f"{what}: connection still open after {timeout}s")

    def expect_open(self, timeout):
        """The connection stays open, with nothing to read, for `timeout` seconds."""
        closed, extra = self.wait_closed(timeout)
        check(not closed, "connection was closed by the server" +
              (f" after sending {extra[:300]!r}" if extra else " (no bytes)"))
        check(not extra, f"unexpected bytes on an idle connection: {extra[:300]!r}")

    def readable(self, timeout):
        """True if bytes (or EOF) are waiting within timeout."""
        if self.buf or self.eof:
            return True
        p = select.poll()          # not select(): descriptors may be above FD_SETSIZE
        p.register(self.sock, select.POLLIN)
        return bool(p.poll(timeout * 1000))


# ----------------------------------------------------------------------------------------------
# Checks on responses

def assert_status(r, status, what=""):
    if r.status != status:
        fail(f"{what + ': ' if what else ''}expected status {status}, got {r.status}: "
             f"{r.raw[:400]!r}")


def assert_error(r, status, code=None, type=None, param="(any)", what=""):
    """The OpenAI error envelope: {"error":{"message","type","param","code"}}, JSON."""
    assert_status(r, status, what)
    ct = r.header("content-type") or ""
    check(ct.split(";")[0].strip().lower() == "application/json",
          f"{status} response Content-Type: expected application/json, got {ct!r}")
    doc = r.json()
    check(isinstance(doc, dict) and isinstance(doc.get("error"), dict),
          f"{status} body is not an error envelope: {r.body[:300]!r}")
    e = doc["error"]
    for k in ("message", "type", "param", "code"):
        check(k in e, f"{status} error envelope lacks {k!r}: {r.body[:300]!r}")
    check(isinstance(e["message"], str) and e["message"],
          f"{status} error message is empty or not a string: {r.body[:300]!r}")
    check(isinstance(e["type"], str) and e["type"],
          f"{status} error type is empty or not a string: {r.body[:300]!r}")
    if code is not None:
        eq(e["code"], code, f"{status} error code")
    if type is not None:
        eq(e["type"], type, f"{status} error type")
    if param != "(any)":
        eq(e["param"], param, f"{status} error param")
    return e


def flatten(doc, prefix=""):
    """{"a":{"b":1}} -> {"a.b": 1}"""
    out = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = doc
    return out


def find_key(flat, pattern):
    """The flattened keys of a JSON document matching a regex (case-insensitive)."""
    return [k for k in flat if re.search(pattern, k, re.I)]


def health_figures(doc):
    """(uptime, connections, in_use, reserved) keys found in a /healthz document, each a list of
    dotted paths: the contract names the figures, not the keys, so match by name."""
    flat = flatten(doc)

    def prefer(keys, *patterns):
        for p in patterns:
            hit = [k for k in keys if re.search(p, k, re.I)]
            if hit:
                return hit
        return []
    uptime = find_key(flat, r"uptime")
    conns = prefer(find_key(flat, r"conn"), r"^connections$", r"(open|active|current|now)$",
                   r"^(?!.*(max|limit|total|accepted|refus|request)).*$")
    mem = find_key(flat, r"mem") or list(flat)
    in_use = prefer(mem, r"in_?use$", r"in_?use", r"used$")
    reserved = prefer(mem, r"reserved$", r"reserv", r"capacity|total$|size$")
    return flat, uptime, conns, in_use, reserved


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
