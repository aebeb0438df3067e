"""HTTP/1.1 on the wire: keep-alive, Connection: close, HTTP/1.0, pipelining, request bodies
(Content-Length, chunked), Expect: 100-continue, Content-Length framing of responses."""
import json
import time

from harness import Server, assert_error, assert_status, build_request, check, chunked, eq

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def unknown_model_body(name="no-such-model"):
    return json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_keepalive_is_the_default():
    with Server() as s:
        c = s.connect()
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "first request")
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "second request on the same connection")
        c.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_status(c.read_response(), 200, "third request on the same connection")


def test_keepalive_survives_a_404():
    with Server() as s:
        c = s.connect()
        c.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_status(c.read_response(), 404)
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "request after a 404 on the same connection")


def test_responses_carry_content_length():
    with Server() as s:
        for path in ("/healthz", "/v1/models", "/nope"):
            r = s.get(path)
            check(r.header("content-length") is not None or r.framing == "chunked",
                  f"GET {path} ({r.status}): neither Content-Length nor chunked: {r.raw[:300]!r}")
            if r.framing == "length":
                eq(len(r.body), int(r.header("content-length")), f"GET {path} body length")


def test_connection_close_is_honoured():
    with Server() as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert_status(c.read_response(), 200)
        c.expect_closed(2, "after a response to 'Connection: close'")


def test_http10_closes_by_default():
    with Server() as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        assert_status(c.read_response(), 200)
        c.expect_closed(2, "after an HTTP/1.0 response without keep-alive")


def test_http10_keepalive_when_asked():
    with Server() as s:
        c = s.connect()
        req = b"GET /healthz HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        c.send(req)
        r = c.read_response()
        assert_status(r, 200, "HTTP/1.0 keep-alive request")
        c.send(req)
        assert_status(c.read_response(), 200, "second HTTP/1.0 keep-alive request, same connection")


def test_pipelined_requests_answered_in_order():
    with Server() as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-1\r\n\r\n"
               b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-2\r\n\r\n"
               b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-3\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-4\r\n\r\n")
        want = [(200, "pipe-1"), (404, "pipe-2"), (200, "pipe-3"), (200, "pipe-4")]
        got = []
        for _ in want:
            r = c.read_response()
            got.append((r.status, r.header("x-request-id")))
        eq(got, want, "pipelined responses (status, x-request-id)")


def test_pipelined_requests_with_bodies():
    with Server() as s:
        c = s.connect()
        a = unknown_model_body("pipe-a")
        b = unknown_model_body("pipe-b")
        c.send(build_request("POST", "/v1/chat/completions", {"X-Request-Id": "body-1"}, a) +
               build_request("POST", "/v1/chat/completions",
                             {"X-Request-Id": "body-2", "Transfer-Encoding": "chunked"},
                             chunked(b[:10], b[10:])) +
               b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: body-3\r\n\r\n")
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        eq([(r.status, r.header("x-request-id")) for r in (r1, r2, r3)],
           [(404, "body-1"), (404, "body-2"), (200, "body-3")],
           "pipelined responses (status, x-request-id)")


def test_many_pipelined_requests_in_one_send():
    n = 50
    with Server() as s:
        c = s.connect(timeout=10)
        c.send(b"".join(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: many-%d\r\n\r\n" % i
                        for i in range(n)))
        for i in range(n):
            r = c.read_response(10)
            eq((r.status, r.header("x-request-id")), (200, f"many-{i}"), f"pipelined response {i}")


def test_content_length_body_sent_in_pieces():
    with Server() as s:
        c = s.connect()
        body = unknown_model_body("split-model-name")
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 7):
            time.sleep(0.01)
            c.send(body[i:i + 7])
        # 404 model_not_found proves the whole body was read and parsed.
        assert_error(c.read_response(), 404, "model_not_found")


def test_chunked_request_body():
    with Server() as s:
        body = unknown_model_body("chunked-model")
        cut = body.index(b"chunked-model") + 4     # the model name spans two chunks
        c = s.connect()
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(chunked(body[:cut], body[cut:cut + 3], body[cut + 3:]))
        assert_error(c.read_response(), 404, "model_not_found")
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200, "keep-alive after a chunked request")


def test_chunked_request_body_is_parsed():
    with Server() as s:
        c = s.connect()
        # valid chunking, malformed JSON inside: the 400 must come from the JSON check
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + chunked(b'{"model": "alpha", ', b'"messages": [}'))
        assert_error(c.read_response(), 400, type="invalid_request_error")


def test_chunked_body_trickled_byte_by_byte():
    with Server() as s:
        c = s.connect()
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n")
        body = unknown_model_body("trickle")
        data = chunked(*[body[i:i + 5] for i in range(0, len(body), 5)])
        for i in range(len(data)):          # every chunk-size line and CRLF split too
            c.send(data[i:i + 1])
            time.sleep(0.002)
        assert_error(c.read_response(), 404, "model_not_found")


def test_expect_100_continue():
    with Server() as s:
        c = s.connect()
        body = unknown_model_body("expect-model")
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        r = c.read_response(3)
        eq((r.version, r.status), ("HTTP/1.1", 100),
           "interim response before the body is sent")
        c.send(body)
        assert_error(c.read_response(), 404, "model_not_found")


def test_expect_100_continue_with_too_large_body_gets_413():
    with Server(server={"max_request_body": "64K"}) as s:
        c = s.connect()
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               b"\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n")
        r = c.read_response(3)
        check(r.status != 100, "got 100 Continue for a body over max_request_body (want 413)")
        assert_error(r, 413, "request_too_large")


def test_unknown_path_is_404():
    with Server() as s:
        for path in ("/nope", "/v1/nope", "/healthz/extra", "/v1/chat/completions/x"):
            assert_error(s.get(path), 404, "not_found", what=f"GET {path}")


def test_wrong_method_is_405_with_allow():
    with Server() as s:
        cases = [("POST", "/healthz", "GET"), ("DELETE", "/v1/models", "GET"),
                 ("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/chat/completions", "POST")]
        for method, path, allowed in cases:
            r = s.request(method, path, body=b"" if method in ("POST", "PUT") else None)
            assert_error(r, 405, "method_not_allowed", what=f"{method} {path}")
            allow = r.header("allow")
            check(allow is not None, f"{method} {path}: 405 without an Allow header")
            methods = [m.strip() for m in allow.split(",")]
            check(allowed in methods, f"{method} {path}: Allow is {allow!r}, want it to list "
                  f"{allowed}")
            check(method not in methods, f"{method} {path}: Allow {allow!r} lists {method}")


def test_query_string_does_not_change_the_route():
    with Server() as s:
        assert_status(s.get("/healthz?x=1"), 200, "GET /healthz?x=1")
        assert_status(s.get("/v1/models?limit=5"), 200, "GET /v1/models?limit=5")


def test_keepalive_after_a_405_with_a_body():
    with Server() as s:
        c = s.connect()
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert_error(c.read_response(), 405, "method_not_allowed")
        c.send(GET_HEALTH)
        assert_status(c.read_response(), 200,
                      "request after a 405 whose body had to be skipped")
