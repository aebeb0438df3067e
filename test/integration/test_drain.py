"""SIGTERM/SIGINT drain: stop accepting, let in-flight requests finish up to drain_timeout,
close idle keep-alive connections, exit 0."""
import json
import signal
import socket
import time

from harness import Server, assert_error, assert_status, check, eq

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}],
                   "pad": "p" * 2000}).encode()


def start_in_flight(s):
    """A request whose head and half its body are sent."""
    c = s.connect()
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:len(BODY) // 2])
    time.sleep(0.3)     # let the server read it
    return c


def finish_in_flight(c):
    c.send(BODY[len(BODY) // 2:])
    return c.read_response(3)


def new_connection_outcome(s):
    """What a new client sees during drain: "refused", "closed" (possibly after a 503), or a
    description of what went wrong."""
    try:
        sock = socket.create_connection(("127.0.0.1", s.port), 1)
    except ConnectionRefusedError:
        return "refused", b""
    except OSError as e:
        return f"connect failed: {e}", b""
    sock.settimeout(0.2)
    got = b""
    try:
        sock.sendall(GET_HEALTH)
    except OSError:
        return "closed", got
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            d = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            sock.close()
            return "closed", got
        if not d:
            sock.close()
            return "closed", got
        got += d
    sock.close()
    return "still open after 1.5s", got


def test_new_connections_are_refused_during_drain():
    with Server(server={"drain_timeout": "5s"}) as s:
        c = start_in_flight(s)
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        outcome, got = new_connection_outcome(s)
        check(outcome in ("refused", "closed"),
              f"new connection during drain: {outcome}; got {got[:200]!r}")
        check(not got.startswith(b"HTTP/1.1 200"),
              f"a new connection was served during drain: {got[:200]!r}")
        if got:
            check(got.startswith(b"HTTP/1.1 503"), f"new connection during drain got {got[:200]!r}")
        finish_in_flight(c)


def test_in_flight_request_completes_during_drain():
    with Server(server={"drain_timeout": "5s"}) as s:
        c = start_in_flight(s)
        s.signal(signal.SIGTERM)
        time.sleep(0.5)
        check(s.alive(), "the server exited with a request in flight (drain_timeout = 5s)")
        r = finish_in_flight(c)
        assert_error(r, 404, "model_not_found", what="the in-flight request, finished during drain")
        c.expect_closed(2, "the in-flight connection after its response during drain")
        code = s.wait_exit(2)
        check(code is not None, "server still running 2s after its last request finished")
        eq(code, 0, "exit code after drain")


def test_drain_timeout_bounds_the_exit():
    with Server(server={"drain_timeout": "1s"}) as s:
        c = start_in_flight(s)          # never finished
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        code = s.wait_exit(4)
        took = time.monotonic() - t0
        check(code is not None, "server still running 4s after SIGTERM (drain_timeout = 1s)")
        check(took <= 2.2, f"exited {took:.2f}s after SIGTERM; drain_timeout is 1s")
        eq(code, 0, "exit code after the drain timeout")
        closed, _ = c.wait_closed(1)
        check(closed, "the unfinished connection is not closed after exit")


def test_idle_keepalive_connections_are_closed_at_drain():
    with Server(server={"drain_timeout": "5s"}) as s:
        idle = s.connect()
        idle.send(GET_HEALTH)
        assert_status(idle.read_response(), 200)
        busy = start_in_flight(s)       # keeps the server draining, not exited
        s.signal(signal.SIGTERM)
        idle.expect_closed(1, "an idle keep-alive connection at drain")
        check(s.alive(), "server exited with a request in flight")
        finish_in_flight(busy)


def test_drain_with_nothing_in_flight_exits_promptly():
    with Server(server={"drain_timeout": "5s"}) as s:
        idle = s.connect()
        idle.send(GET_HEALTH)
        assert_status(idle.read_response(), 200)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        code = s.wait_exit(3)
        took = time.monotonic() - t0
        check(code is not None, "server still running 3s after SIGTERM with only idle connections")
        check(took < 1, f"exited {took:.2f}s after SIGTERM with nothing in flight "
              "(drain_timeout = 5s should not be waited for)")
        eq(code, 0, "exit code")


def test_sigint_drains_and_exits_0():
    with Server(server={"drain_timeout": "5s"}) as s:
        c = start_in_flight(s)
        s.signal(signal.SIGINT)
        time.sleep(0.3)
        check(s.alive(), "server exited on SIGINT with a request in flight")
        assert_error(finish_in_flight(c), 404, "model_not_found", what="in-flight after SIGINT")
        code = s.wait_exit(3)
        eq(code, 0, "exit code after SIGINT")


def test_healthz_during_drain_is_503_draining():
    with Server(server={"drain_timeout": "5s"}) as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")     # a request under way
        time.sleep(0.2)
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        c.send(b"\r\n")
        r = c.read_response(3)
        eq(r.status, 503, f"/healthz status during drain ({r.raw[:300]!r})")
        doc = r.json()
        eq(doc.get("status"), "draining", "/healthz status field during drain")


def test_server_process_exits_0_on_plain_sigterm():
    with Server() as s:
        assert_status(s.get("/healthz"), 200)
        s.signal(signal.SIGTERM)
        code = s.wait_exit(3)
        eq(code, 0, "exit code on SIGTERM")
