"""Limits and malformed input: 400 + close for smuggling shapes, 413, 431, 408, idle close,
max_connections, and x-request-id on every response."""
import re
import time

from harness import Server, assert_error, assert_status, check, eq

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def bad_request_and_close(data, what):
    """`data` on a fresh connection gets 400 bad_request and the connection is closed (nothing
    after the 400: no response to a smuggled second request)."""
    with Server() as s:
        c = s.connect()
        c.send(data)
        r = c.read_response(3)
        assert_error(r, 400, "bad_request", what=what)
        c.expect_closed(2, f"{what}: after the 400")
        assert_status(s.get("/healthz"), 200, f"{what}: the server still serves others")


# --- smuggling shapes and malformed requests: 400 and close --------------------------------------

def test_content_length_and_chunked_together():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "Content-Length with Transfer-Encoding: chunked")


def test_two_different_content_lengths():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 40\r\n\r\nhello GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "two different Content-Length headers")


def test_content_length_list_with_different_values():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 40\r\n\r\nhello",
        "Content-Length: 5, 40")


def test_bad_chunk_size():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        "chunk size 'zz'")


def test_bare_lf_line_endings():
    bad_request_and_close(b"GET /healthz HTTP/1.1\nHost: x\n\n", "bare LF line endings")


def test_bare_lf_in_one_header_line():
    bad_request_and_close(b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
                          "bare LF ending one header line")


def test_obsolete_line_folding():
    bad_request_and_close(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
                          "obs-fold header continuation")


def test_invalid_method_token():
    bad_request_and_close(b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "method 'G@T'")


def test_non_numeric_content_length():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
        "Content-Length: abc")


def test_negative_content_length():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "Content-Length: -1")


def test_whitespace_before_header_colon():
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        "'Content-Length :' (space before the colon)")


def test_transfer_encoding_not_ending_in_chunked():
    # RFC 9112 6.1: a request whose final coding is not chunked must get 400 and a close.
    bad_request_and_close(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
        b"hello",
        "Transfer-Encoding: gzip")


def test_garbage_request_line():
    bad_request_and_close(b"HELLO\r\n\r\n", "request line 'HELLO'")


def test_bad_http_version():
    bad_request_and_close(b"GET /healthz HTTP/9.Z\r\nHost: x\r\n\r\n", "version 'HTTP/9.Z'")


def test_nul_byte_in_header():
    bad_request_and_close(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                          "NUL byte in a header value")


def test_bad_request_after_a_good_one_on_keepalive():
    with Server() as s:
        c = s.connect()
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "first (good) request")
        c.send(b"GET /healthz HTTP/1.1\nHost: x\n\n")
        assert_error(c.read_response(3), 400, "bad_request", what="second (bare LF) request")
        c.expect_closed(2, "after the 400")


# --- 413: body over max_request_body ------------------------------------------------------------

def test_body_over_limit_announced_by_content_length():
    with Server(server={"max_request_body": "64K"}) as s:
        c = s.connect()
        # only the head: the 413 must come without waiting for a body
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nContent-Length: 65537\r\n\r\n")
        assert_error(c.read_response(3), 413, "request_too_large")


def test_body_over_limit_sent_with_content_length():
    with Server(server={"max_request_body": "64K"}) as s:
        c = s.connect()
        body = b'{"model":"alpha","messages":[],"pad":"' + b"x" * 70000 + b'"}'
        c.try_send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body)
        assert_error(c.read_response(3), 413, "request_too_large")


def test_body_at_limit_is_accepted():
    with Server(server={"max_request_body": "64K"}) as s:
        pad = 65536 - len(b'{"model":"no-such-model","messages":[],"pad":""}')
        body = b'{"model":"no-such-model","messages":[],"pad":"' + b"x" * pad + b'"}'
        eq(len(body), 65536, "body size")
        r = s.request("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, body)
        # not 413: the body is exactly max_request_body; the model is unknown
        assert_error(r, 404, "model_not_found")


def test_chunked_body_over_limit():
    with Server(server={"max_request_body": "64K"}) as s:
        c = s.connect()
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
        for _ in range(5):                   # 80 KiB > 64 KiB, no last chunk sent
            if not c.try_send(chunk):
                break
        assert_error(c.read_response(3), 413, "request_too_large")


# --- 431: head over max_header ------------------------------------------------------------------

def test_one_header_over_max_header():
    with Server(server={"max_header": "8K"}) as s:
        c = s.connect()
        c.try_send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
        assert_error(c.read_response(3), 431, "headers_too_large")


def test_many_headers_over_max_header():
    with Server(server={"max_header": "8K"}) as s:
        c = s.connect()
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100)) + b"\r\n"
        c.try_send(head)
        assert_error(c.read_response(3), 431, "headers_too_large")


def test_head_over_max_header_never_finished():
    # the head is still open when it passes the limit: 431 must not wait for its end
    with Server(server={"max_header": "8K"}) as s:
        c = s.connect()
        c.try_send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000)
        assert_error(c.read_response(3), 431, "headers_too_large")


def test_head_under_max_header_is_accepted():
    with Server(server={"max_header": "8K"}) as s:
        r = s.get("/healthz", {"X-Pad": "p" * 6000})
        assert_status(r, 200, "6000-byte header with max_header = 8K")


# --- 408 and idle close -------------------------------------------------------------------------

def test_incomplete_head_gets_408_and_close():
    with Server(server={"header_timeout": "1s"}) as s:
        c = s.connect()
        t0 = time.monotonic()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response(4)
        took = time.monotonic() - t0
        assert_error(r, 408, "request_timeout")
        check(0.8 <= took <= 2.2, f"408 came after {took:.2f}s; header_timeout is 1s")
        c.expect_closed(1, "after the 408")


def test_silent_new_connection_is_closed_after_header_timeout():
    # A connection that never sends a byte is closed too (a 408 or a plain close).
    with Server(server={"header_timeout": "1s", "idle_timeout": "30s"}) as s:
        c = s.connect()
        t0 = time.monotonic()
        closed, extra = c.wait_closed(4)
        took = time.monotonic() - t0
        check(closed, "a connection that sent nothing was still open after 4s "
              "(header_timeout = 1s)")
        check(took <= 2.5, f"closed after {took:.2f}s; header_timeout is 1s")
        if extra:
            check(extra.startswith(b"HTTP/1.1 408"), f"unexpected bytes before close: {extra[:200]!r}")


def test_idle_keepalive_connection_closed_after_idle_timeout():
    with Server(server={"idle_timeout": "2s", "header_timeout": "10s"}) as s:
        c = s.connect()
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200)
        t0 = time.monotonic()
        closed, extra = c.wait_closed(4)
        took = time.monotonic() - t0
        check(not extra, f"bytes sent on an idle connection: {extra[:200]!r}")
        check(closed, "idle keep-alive connection still open 4s after its response "
              "(idle_timeout = 2s)")
        check(1.7 <= took <= 3.2, f"closed {took:.2f}s after the response; idle_timeout is 2s")


def test_idle_keepalive_is_governed_by_idle_timeout_not_header_timeout():
    with Server(server={"idle_timeout": "10s", "header_timeout": "1s"}) as s:
        c = s.connect()
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200)
        c.expect_open(2)     # idle for twice header_timeout, well under idle_timeout
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "request after 2s idle (idle_timeout = 10s)")


def test_activity_restarts_the_idle_timer():
    with Server(server={"idle_timeout": "2s", "header_timeout": "10s"}) as s:
        c = s.connect()
        for i in range(3):       # 3 x 1.3s = 3.9s of life, never 2s idle
            c.send(GET_HEALTH)
            assert_status(c.read_response(), 200, f"request {i + 1}")
            c.expect_open(1.3)
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "request after 3.9s of a busy connection")


# --- max_connections ----------------------------------------------------------------------------

def hold(s, n):
    """n connections, each having completed one request (so the server surely holds them)."""
    held = []
    for i in range(n):
        c = s.connect()
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, f"held connection {i + 1}")
        held.append(c)
    return held


def read_refusal(c):
    """The answer to a connection over the limit: the server may answer at once or after a
    request; either way a response within 2 s."""
    if not c.readable(1):
        c.try_send(GET_HEALTH)
    return c.read_response(2)


def test_connection_over_max_connections_gets_503_and_close():
    with Server(server={"max_connections": "4"}) as s:
        hold(s, 4)
        extra = s.connect()
        r = read_refusal(extra)
        assert_error(r, 503, "too_many_connections")
        extra.expect_closed(2, "after the 503 too_many_connections")


def test_too_many_connections_503_has_a_request_id():
    with Server(server={"max_connections": "2"}) as s:
        hold(s, 2)
        r = read_refusal(s.connect())
        eq(r.status, 503, "status over max_connections")
        check(r.header("x-request-id"), f"503 too_many_connections without x-request-id: "
              f"{r.raw[:300]!r}")


def test_connection_slot_is_reused_after_a_close():
    with Server(server={"max_connections": "4"}) as s:
        held = hold(s, 4)
        held[0].close()
        time.sleep(0.2)
        r = s.get("/healthz")
        assert_status(r, 200, "new connection after one of 4 (max_connections) closed")


def test_max_connections_refusal_does_not_disturb_held_connections():
    with Server(server={"max_connections": "4"}) as s:
        held = hold(s, 4)
        for _ in range(3):
            extra = s.connect()
            read_refusal(extra)
            extra.close()
        for i, c in enumerate(held):
            c.send(GET_HEALTH)
            assert_status(c.read_response(), 200, f"held connection {i + 1} after refusals")


# --- x-request-id -------------------------------------------------------------------------------

def test_request_id_is_echoed():
    with Server() as s:
        r = s.get("/healthz", {"X-Request-Id": "abc-123_XYZ.test"})
        eq(r.header("x-request-id"), "abc-123_XYZ.test", "x-request-id")


def test_request_id_of_64_chars_is_echoed():
    with Server() as s:
        rid = "r" * 60 + "-064"
        r = s.get("/healthz", {"X-Request-Id": rid})
        eq(r.header("x-request-id"), rid, "x-request-id (64 chars)")


def test_request_id_with_printable_punctuation_is_echoed():
    with Server() as s:
        rid = "a:b/c=d+e~f!g"
        eq(s.get("/healthz", {"X-Request-Id": rid}).header("x-request-id"), rid, "x-request-id")


def test_request_id_with_quote_and_backslash_is_echoed():
    # '"' and '\\' are printable ASCII: the contract says such an id is echoed
    with Server() as s:
        for rid in ('q"uote', 'back\\slash'):
            eq(s.get("/healthz", {"X-Request-Id": rid}).header("x-request-id"), rid,
               "x-request-id")


def test_long_request_id_is_replaced():
    with Server() as s:
        rid = "r" * 65
        got = s.get("/healthz", {"X-Request-Id": rid}).header("x-request-id")
        check(got, "no x-request-id on the response")
        check(got != rid, "a 65-char X-Request-Id was echoed (want a generated one)")
        check(rid not in got, f"x-request-id {got!r} contains the 65-char client id")


def test_unprintable_request_id_is_replaced():
    with Server() as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: ab\tcd\r\n\r\n")
        got = c.read_response().header("x-request-id")
        check(got, "no x-request-id on the response")
        check("\t" not in got and got != "ab\tcd" and got != "ab cd",
              f"an X-Request-Id with a tab was echoed: {got!r}")
        c.close()
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: ab\xffcd\r\n\r\n")
        got = c.read_response().header("x-request-id")
        check(got and "\xff" not in got, f"an X-Request-Id with byte 0xff was echoed: {got!r}")


def test_generated_request_ids_are_distinct():
    with Server() as s:
        c = s.connect()
        ids = []
        for _ in range(5):
            c.send(GET_HEALTH)
            ids.append(c.read_response().header("x-request-id"))
        ids.append(s.get("/healthz").header("x-request-id"))
        check(all(ids), f"a response without x-request-id: {ids}")
        check(all(re.fullmatch(r"[\x21-\x7e]{1,64}", i) for i in ids),
              f"generated ids are not short printable tokens: {ids}")
        eq(len(set(ids)), len(ids), f"distinct generated ids among {ids}")


def test_every_kind_of_response_has_a_request_id():
    with Server(server={"max_request_body": "64K", "max_header": "8K",
                        "header_timeout": "1s"}) as s:
        cases = {
            "200 /healthz": GET_HEALTH,
            "200 /v1/models": b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
            "404": b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            "405": b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
            "400 json": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1"
                        b"\r\n\r\n{",
            "400 bad_request": b"GET /healthz HTTP/1.1\nHost: x\n\n",
            "413": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999"
                   b"\r\n\r\n",
            "431": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n",
            "408": b"GET /healthz HTTP/1.1\r\n",
        }
        missing = []
        for name, data in cases.items():
            c = s.connect()
            c.try_send(data)
            r = c.read_response(3)
            if not r.header("x-request-id"):
                missing.append(f"{name} (got {r.status}, x-request-id "
                               f"{r.header('x-request-id')!r})")
            c.close()
        check(not missing, f"responses without x-request-id: {missing}")
