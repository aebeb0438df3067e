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
        for k, v in (self.env or {}).items():  # a value of None: the variable is unset
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
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


# ----------------------------------------------------------------------------------------------
# The mock provider (test/mock/mock.js) as a process, for the pipeline tests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOCK_JS = os.path.join(ROOT, "test", "mock", "mock.js")
MAKE_CA = os.path.join(ROOT, "test", "system", "make_ca.sh")
NODE = os.environ.get("NODE", "node")


def make_test_ca(*names):
    """A test CA and server certificates (test/system/make_ca.sh) in a fresh temp dir: DIR/ca.pem,
    DIR/other-ca.pem (signed nothing), DIR/NAME.pem and DIR/NAME.key per name."""
    d = tmpdir()
    try:
        p = subprocess.run(["sh", MAKE_CA, d] + list(names or ("localhost",)),
                           capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        fail("make_ca.sh did not finish within 30s")
    if p.returncode != 0:
        fail(f"make_ca.sh failed ({p.returncode}): {p.stderr.decode(errors='replace')[-500:]}")
    return d


class Mock:
    """The mock provider on a free port (`node mock.js --port 0`), over HTTPS when given a
    certificate. It is recorded in `servers`, so run.py stops it after the test, reports it if it
    died during the test and shows its stderr on a failure (it has the interface run.py uses).

    base_url is what a [provider] section points at (…/v1); stats(), requests(), reset() and
    direct() speak to the mock itself, not through sluice."""

    def __init__(self, tls_cert=None, tls_key=None, ca_file=None, name=None, host="127.0.0.1",
                 verbose=False):
        self.tls = tls_cert is not None
        self.args = ["--port", "0", "--host", host]
        if self.tls:
            self.args += ["--tls-cert", tls_cert, "--tls-key", tls_key]
        if name:
            self.args += ["--name", name]
        if verbose:
            self.args.append("--verbose")
        self.ca_file = ca_file
        self.host = host
        self.port = None
        self.proc = None
        self.stopped = False
        self.killed = False
        self.exit_expected = False
        self.exit_code = None
        self.dir = tmpdir()
        self.stderr_path = os.path.join(self.dir, "mock-stderr")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def base_url(self):
        if self.tls:
            return f"https://localhost:{self.port}/v1"
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout=10):
        self.errf = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen([NODE, MOCK_JS] + self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self.errf)
        except OSError as e:
            fail(f"cannot start the mock provider ({NODE} {MOCK_JS}): {e}")
        servers.append(self)
        end = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                fail(f"mock provider printed no `listening PORT` within {timeout}s: "
                     f"{self.stderr()[-500:]!r}")
            b = os.read(self.proc.stdout.fileno(), 1)
            if not b:
                self.exit_expected = True
                fail(f"mock provider exited before listening: {self.stderr()[-500:]!r}")
            line += b
        m = re.match(rb"listening (\d+)\n$", line)
        if not m:
            fail(f"mock provider printed {line!r}, expected `listening PORT`")
        self.port = int(m.group(1))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=5):
        if self.stopped or self.proc is None:
            return self.exit_code
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode
        self.proc.stdout.close()
        self.errf.close()
        return self.exit_code

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return "(mock provider) " + f.read().decode(errors="replace")

    def sanitizer_report(self):
        return False

    # -- speaking to the mock directly
    def _http(self, method, path, body=None, headers=None, timeout=10):
        import http.client
        import ssl
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            c = http.client.HTTPSConnection("localhost", self.port, timeout=timeout, context=ctx)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
        except OSError as e:
            fail(f"mock provider {method} {path}: {e}")
        finally:
            c.close()

    def _control(self, method, path):
        status, _, body = self._http(method, path)
        if status != 200:
            fail(f"mock provider {method} {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def stats(self):
        """/_mock/stats: requests, active, peak_active, aborted, completed, dropped, errors…"""
        return self._control("GET", "/_mock/stats")

    def requests(self, model=None):
        """The last 50 requests the mock received (oldest first), without direct() ones."""
        q = "" if model is None else "?model=" + __import__("urllib.parse").parse.quote(model)
        return [r for r in self._control("GET", "/_mock/requests" + q)
                if r["headers"].get("x-harness-direct") != "1"]

    def reset(self):
        return self._control("POST", "/_mock/reset")

    def direct(self, body, timeout=20):
        """POST /v1/chat/completions to the mock itself: (status, headers, body bytes). Marked so
        that requests() leaves it out."""
        return self._http("POST", "/v1/chat/completions", body,
                          {"X-Harness-Direct": "1"}, timeout)

    def wait_stats(self, pred, timeout, what):
        """Poll stats() until pred(stats) holds; the stats, or a failure naming `what`."""
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > end:
                fail(f"{what}: not within {timeout}s; mock stats {json.dumps(st)}")
            time.sleep(0.05)


# ----------------------------------------------------------------------------------------------
# Reading a response incrementally (streams): bounded memory, timestamps per chunk

RECEIVED_KEEP = 64 * 1024     # bytes of a stream kept in Conn.received for failure reports

_EOL = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """An incremental text/event-stream parser (WHATWG rules: CRLF, LF or CR line ends, `:`
    comments, multi-line data, one optional space after the colon). feed() returns the items
    completed so far: ("data", str) for an event's data, ("comment", str) for a comment line,
    ("field", str) for any other non-empty line (sluice should send none)."""

    def __init__(self):
        self.buf = b""
        self.data = None
        self.pending_fields = 0

    def feed(self, b):
        self.buf += b
        out = []
        pos = 0
        while True:
            m = _EOL.search(self.buf, pos)
            if not m or (m.group() == b"\r" and m.end() == len(self.buf)):
                break   # a CR at the end may be the first half of a CRLF
            line = self.buf[pos:m.start()].decode("utf-8", errors="replace")
            pos = m.end()
            if not line:
                if self.data is not None:
                    out.append(("data", "\n".join(self.data)))
                self.data = None
                self.pending_fields = 0
            elif line.startswith(":"):
                out.append(("comment", line[1:]))
            else:
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    self.data = (self.data or []) + [value]
                else:
                    out.append(("field", line))
        self.buf = self.buf[pos:]
        return out

    def leftover(self):
        """Bytes or an event not terminated by a blank line at the end of the stream."""
        if self.data is not None:
            return "data: " + "\n".join(self.data) + " (event not ended by a blank line)"
        return self.buf.decode("utf-8", errors="replace") if self.buf else ""


class StreamReader:
    """Reads one response from a Conn incrementally: head() then chunks() (chunked bodies) or
    body() for others. Arrival times are relative to `t0` (time.monotonic() at creation unless
    given). Keeps at most RECEIVED_KEEP bytes in conn.received, so huge streams stay cheap; when
    the response is over, the bytes after it go back to conn.buf for the next read_response()."""

    def __init__(self, conn, t0=None):
        self.c = conn
        self.buf = bytearray(conn.buf)
        conn.buf = b""
        self.t0 = time.monotonic() if t0 is None else t0
        self.head_resp = None
        self.t_head = None
        self.total = 0

    def _fill(self, deadline):
        if self.c.eof:
            raise Closed()
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.c.sock.settimeout(left)
        try:
            d = self.c.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            self.c.eof = True
            raise Closed()
        if not d:
            self.c.eof = True
            raise Closed()
        self.buf += d
        self.total += len(d)
        if len(self.c.received) < RECEIVED_KEEP:
            self.c.received += d[:RECEIVED_KEEP - len(self.c.received)]

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill(deadline)

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        d = bytes(self.buf[:n])
        del self.buf[:n]
        return d

    def head(self, timeout):
        """The status line and headers (a Response without body); raises Closed or
        socket.timeout."""
        deadline = time.monotonic() + timeout
        r = Response()
        line = self._line(deadline)
        raw = line + b"\r\n"
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            fail(f"bad status line {line!r}")
        r.version, r.status = parts[0], int(parts[1])
        r.reason = parts[2] if len(parts) > 2 else ""
        while True:
            line = self._line(deadline)
            raw += line + b"\r\n"
            if not line:
                break
            if b":" not in line:
                fail(f"bad response header line {line!r}")
            k, v = line.split(b":", 1)
            r.headers.append((k.decode("latin-1").strip().lower(), v.decode("latin-1").strip()))
        r.raw = raw
        if (r.header("transfer-encoding") or "").lower() == "chunked":
            r.framing = "chunked"
        elif r.header("content-length") is not None:
            r.framing = "length"
        else:
            r.framing = "close"
        self.head_resp = r
        self.t_head = time.monotonic() - self.t0
        return r

    def chunk(self, deadline):
        """The next chunk's data, or None after the last chunk (and its trailers)."""
        size_line = self._line(deadline)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            fail(f"bad chunk size line {size_line!r}")
        if size == 0:
            while self._line(deadline):
                pass
            self.done()
            return None
        d = self._take(size, deadline)
        crlf = self._take(2, deadline)
        if crlf != b"\r\n":
            fail(f"chunk of {size} bytes not followed by CRLF but {crlf!r}")
        return d

    def body(self, timeout):
        """The whole body of a response that is not chunked (Content-Length or close)."""
        deadline = time.monotonic() + timeout
        r = self.head_resp
        if r.framing == "length":
            r.body = self._take(int(r.header("content-length")), deadline)
        else:
            try:
                while True:
                    self._fill(deadline)
            except Closed:
                pass
            r.body = bytes(self.buf)
            self.buf = bytearray()
        r.raw += r.body
        self.done()
        return r.body

    def done(self):
        self.c.buf = bytes(self.buf)
        self.buf = bytearray()


class SSEResult:
    """What read_sse() saw: head (a Response; body filled for non-chunked answers), items (the
    SSE items in order, see SSEParser), data (the data payloads only), times (arrival of each
    item, seconds since the request was sent), end ("done": the chunked body ended properly;
    "closed": the connection closed before; "timeout"), leftover (unterminated SSE text)."""

    def __init__(self):
        self.head = None
        self.items = []
        self.times = []
        self.end = None
        self.leftover = ""
        self.t_first_byte = None
        self.t_end = None
        self.bytes = 0

    @property
    def data(self):
        return [v for k, v in self.items if k == "data"]

    @property
    def status(self):
        return self.head.status if self.head else 0

    def header(self, name):
        return self.head.header(name) if self.head else None

    def data_times(self):
        return [t for (k, _), t in zip(self.items, self.times) if k == "data"]

    def describe(self, limit=1200):
        s = f"status {self.status}, end {self.end!r}, items {self.items!r}"
        if self.leftover:
            s += f", unterminated {self.leftover[:200]!r}"
        return s[:limit]


def recv_head(c):
    """A raw server's side: read from socket c up to the end of a request's head. (head, the
    bytes after it), or (None, b"") if c closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = c.recv(65536)
        if not more:
            return None, b""
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def recv_body(c, head, body):
    """The rest of a request's body, as its Content-Length says (body: what came with the head)."""
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    while m and len(body) < int(m.group(1)):
        more = c.recv(65536)
        if not more:
            break
        body += more
    return body


def read_sse(conn, timeout=10, t0=None, on_item=None, keep=True, stop=None, gap=None):
    """Read one streamed response from conn: the head, then the chunked body parsed as SSE as it
    arrives. on_item(kind, value, t) is called per item; keep=False does not store items (huge
    streams); stop(result) returning True ends reading early (end = "stopped"); gap: seconds
    without a new chunk after which reading ends (end = "stalled"). A non-chunked answer (an
    error) is read whole into result.head.body. Never fails on a timeout or a close: result.end
    says how it ended."""
    res = SSEResult()
    rd = StreamReader(conn, t0)
    deadline = time.monotonic() + timeout
    parser = SSEParser()
    try:
        res.head = rd.head(max(0.0, deadline - time.monotonic()))
        res.t_first_byte = rd.t_head
        if res.head.framing != "chunked":
            rd.body(max(0.0, deadline - time.monotonic()))
            res.end = "done"
            return res
        while True:
            if gap is not None and deadline - time.monotonic() > gap:
                try:
                    d = rd.chunk(time.monotonic() + gap)
                except socket.timeout:
                    res.end = "stalled"
                    break
            else:
                d = rd.chunk(deadline)
            if d is None:
                res.end = "done"
                break
            t = time.monotonic() - rd.t0
            for kind, value in parser.feed(d):
                if on_item:
                    on_item(kind, value, t)
                if keep:
                    res.items.append((kind, value))
                    res.times.append(t)
            if stop and stop(res):
                res.end = "stopped"
                break
    except Closed:
        res.end = "closed"
    except socket.timeout:
        res.end = "timeout"
    finally:
        res.t_end = time.monotonic() - rd.t0
        res.bytes = rd.total
    if res.end != "stopped":
        res.leftover = parser.leftover()
    return res


def memory_in_use(server):
    """/healthz memory in use (the figure health_figures finds)."""
    doc = server.get("/healthz").json()
    flat, _, _, in_use, _ = health_figures(doc)
    check(in_use and is_number(flat[in_use[0]]), f"no memory in-use figure in /healthz {doc}")
    return flat[in_use[0]]
