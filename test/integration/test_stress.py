"""Hostile and heavy clients: slowloris, 2,000 idle connections, memory exhaustion and
recovery, clients vanishing at any moment, random garbage."""
import json
import random
import socket
import threading
import time

from harness import Server, assert_error, assert_status, check, eq, fail, health_figures

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def timed_get(s, path="/healthz"):
    t0 = time.monotonic()
    r = s.get(path, timeout=3)
    return r, time.monotonic() - t0


# --- slowloris ----------------------------------------------------------------------------------

def test_slowloris_gets_408_in_time_while_others_are_served():
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-and-steady\r\nX-Pad: aaaa\r\n\r\n"
    with Server(server={"header_timeout": "2s", "idle_timeout": "30s"}) as s:
        slow = s.connect()
        t0 = time.monotonic()
        next_byte, sent = t0, 0
        other = s.connect()          # a keep-alive neighbour, served throughout
        worst = 0.0
        served = 0
        while time.monotonic() - t0 < 5:
            now = time.monotonic()
            if now >= next_byte and sent < len(head):
                if not slow.try_send(head[sent:sent + 1]):
                    break            # the server closed it: read what it said
                sent += 1
                next_byte += 1.0
            if slow.readable(0):
                break
            q0 = time.monotonic()
            if served % 2:
                other.send(GET_HEALTH)
                r = other.read_response(2)
            else:
                r = s.get("/healthz", timeout=2)   # and fresh connections
            worst = max(worst, time.monotonic() - q0)
            assert_status(r, 200, f"another client, {time.monotonic() - t0:.1f}s into the slowloris")
            served += 1
            time.sleep(0.1)
        r = slow.read_response(1)
        took = time.monotonic() - t0
        assert_error(r, 408, "request_timeout", what="trickled head")
        check(took <= 3.2, f"408 came {took:.2f}s after the first byte (header_timeout = 2s)")
        check(sent < len(head), "the whole head was sent before the 408 (test too slow?)")
        slow.expect_closed(1, "after the 408")
        check(served >= 5, f"only {served} requests from another client were served meanwhile")
        check(worst < 0.5, f"another client waited {worst:.2f}s for a response during slowloris")


def test_many_slowloris_clients_do_not_block_others():
    with Server(server={"header_timeout": "2s", "idle_timeout": "30s"}) as s:
        slow = [s.connect() for _ in range(50)]
        for c in slow:
            c.send(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        worst = 0.0
        while time.monotonic() - t0 < 1.5:
            for c in slow:
                c.try_send(b"X")
            r, took = timed_get(s)
            assert_status(r, 200, "a fresh client among 50 slowloris ones")
            worst = max(worst, took)
            time.sleep(0.1)
        check(worst < 0.5, f"a fresh client waited {worst:.2f}s among 50 slowloris clients")
        for i, c in enumerate(slow):
            r = c.read_response(3)
            assert_error(r, 408, "request_timeout", what=f"slowloris client {i}")


# --- 2,000 idle connections ---------------------------------------------------------------------

def test_2000_idle_connections_and_a_fresh_request_is_prompt():
    n = 2000
    cfg = {"max_connections": "4096", "header_timeout": "60s", "idle_timeout": "60s",
           "memory": "64M"}
    with Server(server=cfg) as s:
        idle = []
        for i in range(n):
            try:
                sock = socket.create_connection(("127.0.0.1", s.port), 5)
            except OSError as e:
                fail(f"could not open idle connection {i + 1}: {e}")
            idle.append(sock)
        try:
            # let the server accept them all: healthz must see them
            key, count = None, 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                flat, _, conns, _, _ = health_figures(s.get("/healthz", timeout=3).json())
                if conns:
                    key, count = conns[0], flat[conns[0]]
                    if count >= n:
                        break
                time.sleep(0.1)
            check(key is not None, "no connections figure in /healthz")
            check(count >= n, f"/healthz {key} = {count} with {n} idle connections open")
            worst = 0.0
            for _ in range(10):
                r, took = timed_get(s)
                assert_status(r, 200, f"fresh request with {n} idle connections open")
                worst = max(worst, took)
            check(worst < 1.0, f"a fresh request took {worst:.2f}s with {n} idle connections")
            # a request on one of the idle connections is served too
            c = idle[n // 2]
            c.settimeout(3)
            c.sendall(GET_HEALTH)
            data = c.recv(4096)
            check(data.startswith(b"HTTP/1.1 200"), f"idle connection {n // 2}: got {data[:100]!r}")
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.5)
        assert_status(s.get("/healthz"), 200, "after closing the idle connections")
test_2000_idle_connections_and_a_fresh_request_is_prompt.timeout = 90


# --- memory exhaustion --------------------------------------------------------------------------

def overload_probe(s):
    """A new request; returns its response."""
    return s.get("/v1/models", timeout=3)


def exhaust_memory(s):
    """Open stalled requests (head with Content-Length: 200000 and part of the body) until a new
    request gets 503. The memory is managed in power-of-two runs, so bodies get smaller as the
    big ones stop fitting, to fill the gaps, and at last connections that hold only a partial
    head. Returns (the 503 response or None, the stalled connections, a log of what happened)."""
    stalled, log = [], []
    plan = [(200000, 100000)] * 6 + [(2 * b, b) for b in (150000, 64000, 32000, 16000, 8000,
                                                          4000, 2000, 1000) for _ in range(4)]
    plan += [(0, 0)] * 200                   # only a partial head
    deadline = time.monotonic() + 30
    for cl, part in plan:
        if time.monotonic() > deadline:
            break
        c = s.connect(timeout=1)
        if cl:
            ok = c.try_send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/json\r\nContent-Length: %d\r\n\r\n" % cl +
                            b'{"model":"alpha","messages":[],"pad":"' + b"x" * (part - 40))
        else:
            ok = c.try_send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        refused = not ok or c.readable(0.05)
        if refused:
            log.append(f"stall CL={cl} part={part}: answered/closed")
            c.close()
        else:
            stalled.append(c)
            log.append(f"stall CL={cl} part={part}: held")
        r = overload_probe(s)
        if r.status == 503:
            return r, stalled, log
        if r.status != 200:
            fail(f"probe during the memory fill got {r.status}: {r.raw[:300]!r}")
    return None, stalled, log


MEM_CFG = {"memory": "1M", "max_request_body": "8M", "header_timeout": "30s",
           "idle_timeout": "30s", "max_connections": "1024"}


def test_one_200k_request_is_served_with_1m_of_memory():
    # The exhaustion scenario below assumes one request with Content-Length: 200000 fits in
    # memory = 1M when nothing else runs; it must be served, not refused as out of memory.
    with Server(server=MEM_CFG) as s:
        body = b'{"model":"no-such-model","messages":[],"pad":"' + b"x" * (200000 - 48) + b'"}'
        eq(len(body), 200000, "body size")
        r = s.request("POST", "/v1/chat/completions", {"Content-Type": "application/json"},
                      body)
        assert_error(r, 404, "model_not_found", what="one 200000-byte request, memory = 1M")


def test_body_that_can_never_fit_in_memory_gets_413_not_503():
    # Memory is managed in power-of-two runs: with memory = 1M the largest run is 512K, so a
    # 600000-byte body can never be held. Retrying would never help: 413, not 503.
    with Server(server=MEM_CFG) as s:
        c = s.connect()
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nContent-Length: 600000\r\n\r\n")
        r = c.read_response()
        assert_error(r, 413, "request_too_large", what="600000-byte body, memory = 1M")


def test_memory_exhaustion_gets_503_overloaded_with_retry_after():
    with Server(server=MEM_CFG) as s:
        r, stalled, log = exhaust_memory(s)
        check(r is not None, f"no 503 with 1M of memory after {len(stalled)} stalled requests "
              f"held ({len(log)} tried)")
        assert_error(r, 503, "overloaded", type="server_error")
        eq(r.header("retry-after"), "1", "Retry-After")
test_memory_exhaustion_gets_503_overloaded_with_retry_after.timeout = 60


def test_overloaded_503_has_a_request_id():
    with Server(server=MEM_CFG) as s:
        r, stalled, log = exhaust_memory(s)
        check(r is not None, "could not exhaust memory (see the test above)")
        check(r.header("x-request-id"), f"503 overloaded without x-request-id: {r.raw[:300]!r}")
test_overloaded_503_has_a_request_id.timeout = 60


def test_memory_recovers_after_stalled_requests_close():
    with Server(server=MEM_CFG) as s:
        r, stalled, log = exhaust_memory(s)
        check(r is not None, "could not exhaust memory (see the test above)")
        for c in stalled:
            c.close()
        got = None
        for _ in range(40):                       # up to 2 s for the server to see the closes
            got = overload_probe(s)
            if got.status == 200:
                break
            time.sleep(0.05)
        assert_status(got, 200, "request after the stalled requests closed")
        doc = s.get("/healthz").json()
        eq(doc.get("status"), "ok", "/healthz status after recovery")
test_memory_recovers_after_stalled_requests_close.timeout = 60


def test_memory_is_returned_after_each_request():
    # many requests with large bodies in sequence never exhaust a small arena
    with Server(server={"memory": "1M", "max_request_body": "8M"}) as s:
        body = json.dumps({"model": "no-such-model", "messages": [],
                           "pad": "x" * 200000}).encode()
        c = s.connect()
        for i in range(30):
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   b"\r\n" % len(body) + body)
            assert_error(c.read_response(), 404, "model_not_found", what=f"request {i + 1}")
test_memory_is_returned_after_each_request.timeout = 60


# --- a client that does not read -----------------------------------------------------------------

def test_slow_reader_is_backpressure_not_growth():
    # 25,000 pipelined requests whose ~10 MB of answers are not read for a while (more than the
    # kernel buffers hold: the client's receive buffer is pinned at 16K): the server must stop
    # reading that client rather than queue its answers (memory = 4M), keep serving others
    # with memory to spare, and deliver every answer, in order, once the client reads.
    n = 25000
    with Server(server={"memory": "4M", "idle_timeout": "30s"}) as s:
        slow = s.connect(timeout=20, rcvbuf=16384)
        req = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        sender = threading.Thread(target=lambda: slow.try_send(req * n), daemon=True)
        sender.start()
        time.sleep(1.5)
        worst, doc = 0.0, None
        for _ in range(5):
            r, took = timed_get(s, "/healthz")
            assert_status(r, 200, "another client while one does not read its answers")
            worst = max(worst, took)
            doc = r.json()
        check(worst < 1, f"another client waited {worst:.2f}s while one did not read")
        flat, _, _, in_use, reserved = health_figures(doc)
        if in_use and reserved:
            u, rsv = flat[in_use[0]], flat[reserved[0]]
            check(u < rsv / 2, f"memory in use {u} of {rsv} while one client does not read")
        for i in range(n):
            r = slow.read_response(10)
            if r.status != 200:
                fail(f"answer {i + 1} of {n} to the slow reader: {r.raw[:300]!r}")
        sender.join(5)
test_slow_reader_is_backpressure_not_growth.timeout = 60


# --- clients that vanish ------------------------------------------------------------------------

def survive(s, what):
    """The server is alive and serves a keep-alive client and a fresh one promptly."""
    check(s.alive(), f"server died after {what}")
    r, took = timed_get(s)
    assert_status(r, 200, f"fresh request after {what}")
    check(took < 1, f"fresh request took {took:.2f}s after {what}")


def test_disconnect_mid_head():
    with Server() as s:
        neighbour = s.connect()
        for i in range(20):
            c = s.connect()
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Cut: " + b"a" * i)
            (c.reset if i % 2 else c.close)()
        neighbour.send(GET_HEALTH)
        assert_status(neighbour.read_response(), 200, "keep-alive neighbour")
        survive(s, "clients leaving mid-head")


def test_disconnect_mid_body():
    with Server() as s:
        for i in range(20):
            c = s.connect()
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                   b"\r\n" + b"{" * (i * 100))
            (c.reset if i % 2 else c.close)()
        for i in range(10):
            c = s.connect()
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                   b"chunked\r\n\r\n10\r\n0123456789")
            (c.reset if i % 2 else c.close)()
        survive(s, "clients leaving mid-body")


def test_disconnect_while_waiting_for_100_continue():
    with Server() as s:
        for i in range(10):
            c = s.connect()
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 100\r\n\r\n")
            (c.reset if i % 2 else c.close)()
        survive(s, "clients leaving while waiting for 100 Continue")


def test_disconnect_without_reading_responses():
    with Server() as s:
        many = GET_HEALTH * 200 + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 200
        for i in range(10):
            c = s.connect()
            c.send(many)
            (c.reset if i % 2 else c.close)()
        time.sleep(0.3)
        survive(s, "clients sending 400 pipelined requests and leaving without reading")


def test_disconnect_right_after_a_request():
    with Server() as s:
        for i in range(30):
            c = s.connect()
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                   b"\r\n{}" if i % 3 else GET_HEALTH)
            (c.reset if i % 2 else c.close)()
        survive(s, "clients leaving right after sending a request")


def test_half_closed_client_still_gets_its_response():
    # shutdown(SHUT_WR) after the request: the response is still written
    with Server() as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert_status(c.read_response(), 200, "response to a half-closed client")


def test_random_garbage_does_not_hurt_the_server():
    rng = random.Random(20240601)
    with Server(server={"header_timeout": "1s"}) as s:
        sent = []
        for i in range(40):
            c = s.connect()
            data = rng.randbytes(rng.randint(1, 4000))
            if i % 4 == 1:
                data = GET_HEALTH + data          # garbage after a good request
            elif i % 4 == 2:
                data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + data
            c.try_send(data)
            sent.append((c, data))
        # whatever the answers, the server must not hang on to any of them (header_timeout 1s)
        deadline = time.monotonic() + 3
        for i, (c, data) in enumerate(sent):
            closed, _ = c.wait_closed(max(0.01, deadline - time.monotonic()))
            check(closed, f"garbage connection {i} still open 3s after its bytes "
                  f"(header_timeout = 1s); sent {data[:80]!r}...")
        survive(s, "40 connections of random bytes")


def test_garbage_gets_400():
    with Server() as s:
        rng = random.Random(7)
        for i in range(10):
            c = s.connect()
            data = bytes(rng.choice(b"\x00\x01\x7f\xff{}<>@") for _ in range(64)) + b"\r\n\r\n"
            c.try_send(data)
            r = c.read_response(3)
            assert_error(r, 400, "bad_request", what=f"garbage {data[:40]!r}")
            c.expect_closed(2, "after the 400 to garbage")
