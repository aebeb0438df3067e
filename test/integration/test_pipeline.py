"""The pipeline (issue 4): chat completions forwarded to an `openai`-type provider — the mock in
test/mock/mock.js — sync and streamed, with the commit point, provider errors, timeouts, limits,
cancellation, backpressure, TLS and many streams at once.

Every test starts a mock provider and sluice pointed at it. The mock picks its behaviour from the
upstream model name (`tokens=5`, `drop_after=2`, …); a client asks for `mock/<scenario>` or for
a configured [model]. What sluice must send the client is derived from what the mock sends when
asked directly (Mock.direct()): the same events, `model` rewritten, nothing else changed.
"""
import json
import os
import re
import select
import socket
import threading
import time
from contextlib import contextmanager

from harness import (Mock, Server, assert_error, assert_status, check, eq, fail, make_test_ca,
                     memory_in_use, read_sse, recv_body, recv_head)

MSGS = [{"role": "user", "content": "hi"}]
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Server keys for these tests: heartbeats off, so "nothing is sent before the first content"
# is observable; room for the huge-stream and many-stream tests.
SERVER = {"stream_heartbeat": "0", "idle_timeout": "30s", "memory": "32M",
          "max_connections": "512"}

PROVIDER = {
    "type": "openai",
    "api_key": "sk-test",
    "timeout_connect": "2s",
    "timeout_first_byte": "5s",
    "timeout_idle": "5s",
    "timeout_total": "30s",
    "headers": "X-Extra: 1",
}

MODELS = {"gpt-test": "mock/tokens=5"}


def catalog(base_url, provider=None, models=None, name="mock"):
    """[provider.NAME] (PROVIDER overridden by `provider`; None drops a key) and [model.*]."""
    keys = dict(PROVIDER, base_url=base_url)
    for k, v in (provider or {}).items():
        if v is None:
            keys.pop(k, None)
        else:
            keys[k] = v
    text = f"\n[provider.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    for model, targets in (MODELS if models is None else models).items():
        text += f"\n[model.{model}]\ntargets = {targets}\n"
    return text


@contextmanager
def pipeline(provider=None, server=None, models=None, mock=None):
    """A mock provider and sluice in front of it: yields (sluice, mock)."""
    with (mock or Mock()) as m:
        with Server(server=dict(SERVER, **(server or {})),
                    extra=catalog(m.base_url, provider, models)) as s:
            yield s, m


# --- client side --------------------------------------------------------------------------------

def chat_body(model, stream=None, **extra):
    b = {"model": model, "messages": MSGS}
    if stream is not None:
        b["stream"] = stream
    b.update(extra)
    return b


def post(conn, body, headers=None):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.send_request("POST", "/v1/chat/completions", h, body)


def stream(s, body, timeout=10, headers=None, conn=None):
    """POST a streamed request on a fresh connection (or conn); read it with read_sse."""
    c = conn or s.connect(timeout)
    post(c, body, headers)
    r = read_sse(c, timeout)
    r.conn = c
    return r


def sync(s, body, timeout=10, headers=None):
    c = s.connect(timeout)
    t0 = time.monotonic()
    post(c, body, headers)
    r = c.read_response(timeout)
    r.took = time.monotonic() - t0
    c.close()
    return r


# --- what the client must get, from the mock's own answer ---------------------------------------

def direct_stream(m, upstream, include_usage=True, **extra):
    """The data payloads of the mock's stream for `upstream` (asked directly, as sluice asks:
    include_usage on), [DONE] included."""
    body = chat_body(upstream, True, stream_options={"include_usage": include_usage}, **extra)
    status, headers, raw = m.direct(body)
    if status != 200:
        fail(f"mock asked directly for {upstream!r}: {status} {raw[:300]!r}")
    from harness import SSEParser
    p = SSEParser()
    items = p.feed(raw)
    check(not p.leftover(), f"mock stream for {upstream!r} ends unterminated")
    return [v for k, v in items if k == "data"]


def rewrite(payload, upstream, client):
    """A mock event with its model rewritten: exactly one `"model":"<upstream>"` in it."""
    old = f'"model":{json.dumps(upstream)}'
    new = f'"model":{json.dumps(client)}'
    check(payload.count(old) == 1, f"mock event without exactly one {old}: {payload[:300]}")
    return payload.replace(old, new)


def is_usage_chunk(payload):
    if payload == "[DONE]":
        return False
    doc = json.loads(payload)
    return doc.get("choices") == [] and doc.get("usage") is not None


def is_content(payload):
    """A content-bearing chunk: text, reasoning, tool call, refusal, or a finish."""
    if payload == "[DONE]":
        return False
    doc = json.loads(payload)
    for ch in doc.get("choices") or []:
        d = ch.get("delta") or {}
        if d.get("content") or d.get("reasoning_content") or d.get("tool_calls") or \
                d.get("refusal") or ch.get("finish_reason"):
            return True
    return False


def expected_stream(m, src, client, include_usage=False, **extra):
    """What the client asking for `client` must receive when the mock streams scenario `src`
    (asked directly; usually the fault-free and delay-free form of the client's scenario): the
    mock's payloads with model rewritten to `client`, the usage chunk kept only if the client
    asked for it, [DONE] last."""
    out = []
    for p in direct_stream(m, src, **extra):
        if p == "[DONE]":
            out.append(p)
        elif is_usage_chunk(p) and not include_usage:
            continue
        else:
            out.append(rewrite(p, src, client))
    return out


def through_content(events, k):
    """The events up to and including the k-th content-bearing one (the preamble before it)."""
    n = 0
    for i, p in enumerate(events):
        if is_content(p):
            n += 1
            if n == k:
                return events[:i + 1]
    fail(f"expected stream has fewer than {k} content events: {events}")


def text_of(events):
    out = ""
    for p in events:
        if p == "[DONE]":
            continue
        for ch in json.loads(p).get("choices") or []:
            out += (ch.get("delta") or {}).get("content") or ""
    return out


def assert_stream_head(r, upstream, provider="mock", early=False):
    """early: the head went before the commit point (heartbeats), when the attempt that will
    serve is not known yet, so it names none."""
    assert_status(r.head, 200, "stream")
    ct = (r.header("content-type") or "").split(";")[0].strip().lower()
    eq(ct, "text/event-stream", "stream Content-Type")
    eq(r.header("cache-control"), "no-cache", "stream Cache-Control")
    eq(r.header("x-accel-buffering"), "no", "stream X-Accel-Buffering")
    eq((r.header("transfer-encoding") or "").lower(), "chunked", "stream Transfer-Encoding")
    eq(r.header("content-length"), None, "stream Content-Length")
    check(r.header("x-request-id"), "stream without x-request-id")
    if early:
        for h in ("x-sluice-provider", "x-sluice-model", "x-sluice-attempts"):
            eq(r.header(h), None, f"early stream head: {h}")
        return
    eq(r.header("x-sluice-provider"), provider, "stream x-sluice-provider")
    eq(r.header("x-sluice-model"), upstream, "stream x-sluice-model")
    # DESIGN §1: a served response carries x-sluice-attempts too
    eq(r.header("x-sluice-attempts"), "1", "stream x-sluice-attempts")


def assert_stream_exact(r, want, what="stream"):
    """A whole, clean stream: the data payloads exactly `want` ([DONE] last), nothing else."""
    check(r.head is not None, f"{what}: no response ({r.end})")
    assert_status(r.head, 200, what)
    check(r.end == "done", f"{what}: the chunked body did not end properly ({r.end}); "
          f"{r.describe()}")
    others = [it for it in r.items if it[0] != "data"]
    check(not others, f"{what}: non-data SSE lines {others[:5]} (heartbeats are off)")
    check(not r.leftover, f"{what}: unterminated SSE at the end: {r.leftover[:200]!r}")
    got = r.data
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                fail(f"{what}: event {i} differs:\n  expected {w[:400]}\n  got      {g[:400]}")
        fail(f"{what}: {len(got)} events, expected {len(want)}: extra/missing "
             f"{(got[len(want):] or want[len(got):])[:3]}")


def assert_interrupted(r, want_prefix, what="stream"):
    """A 200 stream with exactly the content received (want_prefix), then one stream_interrupted
    error event, then the end of the chunked body; never [DONE]."""
    assert_status(r.head, 200, what)
    check(r.end == "done", f"{what}: the chunked body did not end properly after the error "
          f"event ({r.end}); {r.describe()}")
    check(not r.leftover, f"{what}: unterminated SSE at the end: {r.leftover[:200]!r}")
    others = [it for it in r.items if it[0] != "data"]
    check(not others, f"{what}: non-data SSE lines {others[:5]}")
    got = r.data
    check("[DONE]" not in got, f"{what}: data: [DONE] after a failure: {r.describe()}")
    check(got, f"{what}: no events at all")
    errs = [i for i, p in enumerate(got) if '"error"' in p and _error_doc(p) is not None]
    check(len(errs) == 1, f"{what}: expected exactly one error event, got {len(errs)}: "
          f"{r.describe()}")
    check(errs[0] == len(got) - 1, f"{what}: the error event is not the last event: "
          f"{r.describe()}")
    eq(got[:-1], want_prefix, f"{what}: the events before the error event")
    doc = _error_doc(got[-1])
    e = doc["error"]
    eq(sorted(doc), ["error"], f"{what}: error event top-level keys")
    eq(sorted(e), ["code", "message", "param", "type"], f"{what}: error event keys")
    check(isinstance(e["message"], str) and e["message"], f"{what}: empty error message")
    eq(e["type"], "upstream_error", f"{what}: error event type")
    eq(e["param"], None, f"{what}: error event param")
    eq(e["code"], "stream_interrupted", f"{what}: error event code")
    return e


def _error_doc(p):
    try:
        doc = json.loads(p)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else None


def assert_upstream_error(r, status, code=None, provider="mock", what=""):
    """A clean error answer naming the provider (not a stream)."""
    e = assert_error(r, status, code, what=what)
    eq(r.header("x-sluice-provider"), provider, f"{what + ': ' if what else ''}x-sluice-provider")
    check(r.header("x-request-id"), f"{what}: error without x-request-id")
    return e


def stream_error(r, status, code=None, provider="mock", what="stream"):
    """A streamed request answered with a clean error before the commit point."""
    check(r.head is not None, f"{what}: no response ({r.end}) {r.describe()}")
    check(r.head.framing != "chunked" or r.status != 200,
          f"{what}: expected a {status} error, got a 200 stream: {r.describe()}")
    return assert_upstream_error(r.head, status, code, provider, what)


# ================================================================================================
# Forwarding: what the provider receives

def test_sync_request_forwarded_byte_for_byte():
    # model in the middle, unknown fields, escapes, odd number spellings, raw UTF-8: only the
    # model's value may change
    body = ('{"messages":[{"role":"user","content":"h\\u00e9llo \\"q\\" \\/ caf\u00e9 \u2713"}],'
            '"temperature":0.50,"model":"gpt-test","top_p":1e0,"seed":-0,'
            '"x_unknown":{"z":[1,2,{"c":null}],"a":true,"empty":{}},"max_tokens":7,'
            '"user":"u-1","stream":false}').encode()
    with pipeline() as (s, m):
        r = sync(s, body)
        assert_status(r, 200, "sync through the mock")
        reqs = m.requests()
        eq(len(reqs), 1, "requests the mock received")
        q = reqs[0]
        eq(q["method"], "POST", "upstream method")
        eq(q["path"], "/v1/chat/completions", "upstream path")
        want = body.replace(b'"model":"gpt-test"', b'"model":"tokens=5"')
        got = q["body"].encode()
        if got != want:
            fail(f"upstream body differs from the client's (model aside):\n  expected {want!r}\n"
                 f"  got      {got!r}")


def test_pretty_printed_request_keeps_every_field_and_order():
    body = json.dumps({"model": "gpt-test", "messages": MSGS, "n": 1, "logit_bias": {"50256": -100},
                       "response_format": {"type": "json_object"}, "frequency_penalty": 0.0,
                       "vendor_ext": [None, True, "x"]}, indent=2)
    with pipeline() as (s, m):
        assert_status(sync(s, body), 200, "sync")
        up = m.requests()[0]["body"]
        want = raw_pairs(body)
        got = raw_pairs(up)
        want_fields = [(k, v) for k, v in want if k != "model"]
        got_fields = [(k, v) for k, v in got if k != "model"]
        eq(got_fields, want_fields, "upstream fields other than model (order and values)")
        eq([k for k, _ in got].index("model"), [k for k, _ in want].index("model"),
           "position of model in the upstream body")
        eq(dict(got)["model"], '"tokens=5"', "upstream model")


def raw_pairs(text):
    """A JSON object as [(key, value as compact JSON with numbers spelled as written)], with
    duplicate keys kept (so a duplicated key is visible)."""
    def hook(pairs):
        return RawObj(pairs)
    doc = json.loads(text, object_pairs_hook=hook, parse_float=RawNum, parse_int=RawNum)
    check(isinstance(doc, RawObj), f"not a JSON object: {text[:200]!r}")
    return [(k, dump_raw(v)) for k, v in doc.pairs]


class RawObj:
    def __init__(self, pairs):
        self.pairs = pairs


class RawNum(str):
    pass


def dump_raw(v):
    if isinstance(v, RawObj):
        return "{" + ",".join(json.dumps(k) + ":" + dump_raw(x) for k, x in v.pairs) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump_raw(x) for x in v) + "]"
    if isinstance(v, RawNum):
        return str(v)
    return json.dumps(v)


def test_upstream_headers_auth_content_type_extra_and_no_client_key():
    provider = {"headers": "X-Extra: 1; X-Other: two words"}
    with pipeline(provider=provider, server={"api_keys": "client-secret-key"}) as (s, m):
        r = sync(s, chat_body("gpt-test"), headers={"Authorization": "Bearer client-secret-key"})
        assert_status(r, 200, "sync with a client key")
        h = m.requests()[0]["headers"]
        eq(h.get("authorization"), "Bearer sk-test", "upstream Authorization")
        eq(h.get("content-type"), "application/json", "upstream Content-Type")
        eq(h.get("x-extra"), "1", "upstream X-Extra")
        eq(h.get("x-other"), "two words", "upstream X-Other")
        leaked = {k: v for k, v in h.items() if "client-secret-key" in v}
        check(not leaked, f"the client's sluice key reached the provider: {leaked}")


def test_stream_adds_include_usage_when_absent():
    body = '{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}],"z":1}'
    with pipeline() as (s, m):
        r = stream(s, body)
        assert_status(r.head, 200, "stream")
        check_stream_options(m.requests()[0]["body"], body, {"include_usage": True})


def test_stream_forces_include_usage_true_and_keeps_other_stream_options():
    body = ('{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}],'
            '"stream_options":{"include_usage":false,"x_other":[1,2]},"z":1}')
    with pipeline() as (s, m):
        r = stream(s, body)
        assert_status(r.head, 200, "stream")
        check_stream_options(m.requests()[0]["body"], body,
                             {"include_usage": True, "x_other": [1, 2]})


def test_stream_include_usage_true_forwarded_as_is():
    body = ('{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},'
            '"messages":[{"role":"user","content":"hi"}]}')
    with pipeline() as (s, m):
        r = stream(s, body)
        assert_status(r.head, 200, "stream")
        got = m.requests()[0]["body"].encode()
        eq(got, body.replace('"model":"gpt-test"', '"model":"tokens=5"').encode(), "upstream body")


def check_stream_options(upstream, client, want_options):
    got, sent = raw_pairs(upstream), raw_pairs(client)
    keys = [k for k, _ in got]
    check(len(keys) == len(set(keys)), f"duplicate keys in the upstream body: {upstream}")
    eq([p for p in got if p[0] not in ("model", "stream_options")],
       [p for p in sent if p[0] not in ("model", "stream_options")],
       "upstream fields other than model and stream_options (order and values)")
    eq(dict(got).get("model"), '"tokens=5"', "upstream model")
    check("stream_options" in dict(got), f"no stream_options upstream: {upstream}")
    eq(json.loads(dict(got)["stream_options"]), want_options, "upstream stream_options")


def test_large_request_body_forwarded_intact():
    big = "".join(chr(0x20 + (i * 7) % 90) for i in range(300_000))
    big = big.replace("\\", "/").replace('"', "'")
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": big}]},
                      separators=(",", ":"))
    with pipeline() as (s, m):
        assert_status(sync(s, body), 200, "sync with a 300 KB body")
        got = m.requests()[0]["body"]
        eq(len(got), len(body) - len("gpt-test") + len("tokens=5"), "upstream body length")
        check(got == body.replace('"model":"gpt-test"', '"model":"tokens=5"'),
              "upstream body differs from the client's")


# ================================================================================================
# Sync answers

def direct_sync(m, upstream):
    status, _, raw = m.direct(chat_body(upstream))
    if status != 200:
        fail(f"mock asked directly for {upstream!r}: {status} {raw[:300]!r}")
    return raw


def test_sync_answer_model_rewritten_rest_identical():
    with pipeline() as (s, m):
        want = direct_sync(m, "tokens=5").replace(b'"model":"tokens=5"', b'"model":"gpt-test"')
        r = sync(s, chat_body("gpt-test"))
        assert_status(r, 200, "sync")
        eq(r.body, want, "sync body (model rewritten, the rest byte-identical)")
        eq(json.loads(r.body)["choices"][0]["message"]["content"], "tok0 tok1 tok2 tok3 tok4",
           "answer text")
        ct = (r.header("content-type") or "").split(";")[0].strip().lower()
        eq(ct, "application/json", "sync Content-Type")
        check(r.header("x-request-id"), "sync answer without x-request-id")
        eq(r.header("x-sluice-provider"), "mock", "x-sluice-provider")
        eq(r.header("x-sluice-model"), "tokens=5", "x-sluice-model")
        eq(r.header("x-sluice-attempts"), "1", "x-sluice-attempts")


def test_sync_provider_slash_model_direct():
    with pipeline() as (s, m):
        want = direct_sync(m, "tokens=3").replace(b'"model":"tokens=3"',
                                                  b'"model":"mock/tokens=3"')
        r = sync(s, chat_body("mock/tokens=3"))
        assert_status(r, 200, "sync mock/tokens=3")
        eq(r.body, want, "sync body for mock/tokens=3")
        eq(r.header("x-sluice-model"), "tokens=3", "x-sluice-model")
        eq(m.requests()[0]["model"], "tokens=3", "model the provider was asked for")


def test_sync_tool_calls_and_reasoning_pass_through():
    with pipeline() as (s, m):
        up = "tool_calls=2,thinking=3"
        want = direct_sync(m, up).replace(b'"model":"tool_calls=2,thinking=3"',
                                          b'"model":"mock/tool_calls=2,thinking=3"')
        r = sync(s, chat_body("mock/" + up))
        assert_status(r, 200, "sync with tool calls")
        eq(r.body, want, "sync body with tool calls and reasoning")


def test_sync_keepalive_serves_several_requests_on_one_connection():
    with pipeline() as (s, m):
        c = s.connect()
        for i in range(3):
            post(c, chat_body("gpt-test"))
            r = c.read_response(10)
            assert_status(r, 200, f"sync request {i + 1} on one connection")
            eq(json.loads(r.body)["model"], "gpt-test", f"model of answer {i + 1}")


# ================================================================================================
# Streams

def test_stream_events_model_rewritten_then_done():
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=5", "gpt-test")
        r = stream(s, chat_body("gpt-test", True))
        assert_stream_head(r, "tokens=5")
        assert_stream_exact(r, want)
        eq(text_of(r.data), "tok0 tok1 tok2 tok3 tok4", "streamed text")
        check(not any(is_usage_chunk(p) for p in r.data), "usage chunk sent to a client that "
              "did not ask for it")


def test_stream_usage_chunk_passed_when_client_asks():
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=5", "mock/tokens=5", include_usage=True)
        r = stream(s, chat_body("mock/tokens=5", True, stream_options={"include_usage": True}))
        assert_stream_head(r, "tokens=5")
        assert_stream_exact(r, want)
        usage = [json.loads(p) for p in r.data if is_usage_chunk(p)]
        eq(len(usage), 1, "usage chunks")
        eq(usage[0]["usage"], {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
           "usage")
        eq(usage[0]["model"], "mock/tokens=5", "usage chunk model")


def test_stream_usage_chunk_removed_when_client_says_false():
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=4", "mock/tokens=4")
        r = stream(s, chat_body("mock/tokens=4", True, stream_options={"include_usage": False}))
        assert_stream_exact(r, want)


def test_stream_keepalive_after_stream():
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=5", "gpt-test")
        c = s.connect(10)
        r = stream(s, chat_body("gpt-test", True), conn=c)
        assert_stream_exact(r, want, "first stream")
        check((r.header("connection") or "").lower() != "close",
              "stream answered Connection: close")
        post(c, chat_body("gpt-test"))
        r2 = c.read_response(10)
        assert_status(r2, 200, "sync request after a stream on the same connection")
        r3 = stream(s, chat_body("gpt-test", True), conn=c)
        assert_stream_exact(r3, want, "second stream on the same connection")


def test_provider_connection_is_reused_while_many_streams_run():
    # 100 slow streams hold 100 provider connections; meanwhile 20 sync requests one after
    # another must share one more connection. libcurl's CURLMOPT_MAXCONNECTS counts connections
    # in use too: a fixed 64 closed every connection a request gave back while more than 64 ran,
    # so under load every request opened a new one (with a TLS provider, a handshake each).
    n = 100
    with pipeline(server={"max_connections": "512"}) as (s, m):
        slow = []
        for _ in range(n):
            c = s.connect(15)
            post(c, chat_body("mock/tokens=20,tps=4", True))
            slow.append(c)
        before = m.wait_stats(lambda st: st["active"] >= n, 10, f"{n} streams running at the mock")
        for i in range(20):
            r = sync(s, chat_body("mock/tokens=1"))
            assert_status(r, 200, f"sync request {i} among {n} streams")
        after = m.stats()
        check(after["active"] >= n, f"the streams ended before the sync requests did: {after}")
        check(after["connections"] - before["connections"] <= 2,
              f"20 sync requests one after another opened {after['connections'] - before['connections']} "
              f"provider connections while {n} streams ran (one should serve them all)")
        for c in slow:
            c.close()


def test_stream_is_not_buffered():
    # 20 tokens 100 ms apart: the first content reaches the client long before the last
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=20", "mock/tokens=20,drip=100")
        r = stream(s, chat_body("mock/tokens=20,drip=100", True), timeout=15)
        assert_stream_exact(r, want)
        t = r.data_times()
        check(t[-1] - t[1] >= 1.2, f"content events arrived in a burst: first content at "
              f"{t[1]:.2f}s, last event at {t[-1]:.2f}s (mock sends them 100 ms apart)")


def test_stream_tool_calls_and_reasoning_pass_through():
    with pipeline() as (s, m):
        up = "tool_calls=2,thinking=3,tokens=2"
        want = expected_stream(m, up, "mock/" + up)
        r = stream(s, chat_body("mock/" + up, True))
        assert_stream_exact(r, want)


def test_stream_finish_only_answer():
    # tokens=0: the finish chunk is the first content-bearing event
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=0", "mock/tokens=0")
        r = stream(s, chat_body("mock/tokens=0", True))
        assert_stream_head(r, "tokens=0")
        assert_stream_exact(r, want)


def test_stream_upstream_line_endings_and_split_reads():
    with pipeline() as (s, m):
        for extra in ("eol=crlf", "eol=cr", "split=3", "eol=crlf,split=1"):
            up = "tokens=6," + extra
            want = expected_stream(m, "tokens=6", "mock/" + up)
            r = stream(s, chat_body("mock/" + up, True), timeout=15)
            assert_stream_head(r, up)
            assert_stream_exact(r, want, f"stream with {extra}")


def test_stream_real_openai_recording_replayed():
    # a recorded OpenAI stream (refusal fields, obfuscation, service_tier, usage chunk last)
    with pipeline() as (s, m):
        fx = "fixture=openai_chat_stream_include_usage.sse"
        src = direct_stream(m, fx)
        recorded_model = json.loads(src[0])["model"]
        want = [p if p == "[DONE]" else rewrite(p, recorded_model, "mock/" + fx)
                for p in src if not is_usage_chunk(p)]
        r = stream(s, chat_body("mock/" + fx, True))
        assert_stream_exact(r, want)


# ================================================================================================
# The commit point

def expect_silence(c, seconds):
    """Not one byte (not even a status line) reaches the client for `seconds`."""
    if c.readable(seconds):
        try:
            got = c.sock.recv(300, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError as e:
            got = f"({e})"
        fail(f"bytes reached the client before the first content: {got!r}")


def test_nothing_sent_before_first_content():
    # role chunk at once, then 1.5 s of silence: the client sees no byte (no status line) until
    # the content, then the whole stream, role chunk included
    with pipeline() as (s, m):
        want = expected_stream(m, "tokens=5", "mock/role_then_stall=1500")
        c = s.connect(10)
        t0 = time.monotonic()
        post(c, chat_body("mock/role_then_stall=1500", True))
        expect_silence(c, 1.2)
        r = read_sse(c, 10, t0=t0)
        assert_stream_head(r, "role_then_stall=1500")
        assert_stream_exact(r, want)
        check(r.t_first_byte >= 1.4, f"first byte after {r.t_first_byte:.2f}s, before the "
              f"first content (1.5 s)")


def test_nothing_sent_while_model_slow_to_first_token():
    with pipeline() as (s, m):
        c = s.connect(10)
        post(c, chat_body("mock/slow_ttft=1500", True))
        expect_silence(c, 1.2)
        r = read_sse(c, 10)
        want = expected_stream(m, "tokens=5", "mock/slow_ttft=1500")
        assert_stream_exact(r, want)


def test_heartbeats_only_keepalive_comments_before_content():
    with pipeline(server={"stream_heartbeat": "400ms"}) as (s, m):
        want = expected_stream(m, "tokens=5", "mock/role_then_stall=2000")
        r = stream(s, chat_body("mock/role_then_stall=2000", True))
        assert_stream_head(r, "role_then_stall=2000", early=True)
        first = next((i for i, (k, _) in enumerate(r.items) if k == "data"), len(r.items))
        before = r.items[:first]
        when = [f"{t:.2f}s" for t in r.times[:first + 1]]
        check(all(k == "comment" and v.strip() == "keepalive" for k, v in before),
              f"before the first content: {before[:6]} (only `: keepalive` comments allowed)")
        check(len(before) >= 2, f"{len(before)} `: keepalive` comments in 2 s of silence "
              f"(stream_heartbeat = 400ms): head at {r.t_first_byte:.2f}s, first data event at "
              f"{when[-1] if when else '-'}")
        check(r.t_first_byte < 1.0, f"head sent after {r.t_first_byte:.2f}s with heartbeats on")
        check(r.times[first - 1] >= 1.5, f"last heartbeat at {r.times[first - 1]:.2f}s: they "
              f"stopped long before the content (2 s)")
        eq(r.data, want, "data events after the heartbeats")
        check(r.end == "done", f"stream did not end properly: {r.end}")


def test_heartbeats_then_failure_before_content_ends_in_one_error_event():
    # the head went early with heartbeats, then the attempt fails before any content: the
    # status can no longer change, but the stream must not end silently or with [DONE]. (The
    # error's code is not pinned: the contract does not say which one this case gets.)
    with pipeline(server={"stream_heartbeat": "300ms"},
                  provider={"timeout_idle": "1s"}) as (s, m):
        for up in ("stall_head=1500,status=503", "role_then_stall=3000"):
            r = stream(s, chat_body("mock/" + up, True))
            what = f"heartbeats, then {up}"
            assert_status(r.head, 200, what)
            check(r.end == "done", f"{what}: the chunked body did not end properly: "
                  f"{r.describe()}")
            kinds = [k for k, _ in r.items]
            check(kinds and kinds[-1] == "data" and kinds.count("data") == 1,
                  f"{what}: expected keepalive comments then one data event: {r.describe()}")
            check(all(v.strip() == "keepalive" for k, v in r.items if k == "comment"),
                  f"{what}: comments other than keepalive: {r.describe()}")
            doc = _error_doc(r.data[0])
            check(doc is not None, f"{what}: the last event is not an error event: {r.describe()}")
            e = doc["error"]
            check(isinstance(e.get("message"), str) and e["message"] and
                  isinstance(e.get("type"), str) and "param" in e and "code" in e,
                  f"{what}: error event is not an OpenAI error object: {r.data[0]}")


def test_role_then_drop_is_502_upstream_closed():
    with pipeline() as (s, m):
        r = stream(s, chat_body("mock/role_then_drop", True))
        stream_error(r, 502, "upstream_closed")


def test_drop_before_any_response_is_502():
    with pipeline() as (s, m):
        r = stream(s, chat_body("mock/drop_head", True))
        stream_error(r, 502, what="stream, provider closed with no response")
        assert_upstream_error(sync(s, chat_body("mock/drop_head")), 502,
                              what="sync, provider closed with no response")


def test_error_event_first_is_clean_error():
    # the provider's in-stream error before any content: nothing committed, a clean error
    with pipeline() as (s, m):
        r = stream(s, chat_body("mock/error_event_first", True))
        e = stream_error(r, 502, what="stream, error event before content")
        check("mock: mid-stream error" in e["message"],
              f"provider's message not kept: {e['message']!r}")


# --- failures after the commit point ------------------------------------------------------------

def interrupted_case(scenario, k, provider=None, timeout=15):
    with pipeline(provider=provider) as (s, m):
        full = expected_stream(m, "tokens=5", "mock/" + scenario)
        # k content events, or (None) all of them: the stream minus its finish chunk and [DONE]
        prefix = through_content(full, k) if k is not None else full[:-2]
        r = stream(s, chat_body("mock/" + scenario, True), timeout=timeout)
        assert_stream_head(r, scenario)
        e = assert_interrupted(r, prefix, f"stream with {scenario}")
        return r, e, s, m


def test_drop_after_content_is_stream_interrupted():
    interrupted_case("drop_after=2", 2)


def test_rst_after_content_is_stream_interrupted():
    interrupted_case("drop_after=3,rst", 3)


def test_stall_mid_beyond_idle_timeout_is_stream_interrupted():
    r, _, _, _ = interrupted_case("stall_mid=4000,after=2", 2, provider={"timeout_idle": "1s"})
    t = r.data_times()
    gap = t[-1] - t[-2]
    check(0.7 <= gap <= 2.5, f"error event {gap:.2f}s after the last content (timeout_idle = 1s)")


def test_malformed_frame_after_content_is_stream_interrupted():
    interrupted_case("malformed_after=2", 2)


def test_stream_without_done_or_finish_is_stream_interrupted():
    # every content chunk, then a clean end with no finish and no [DONE]: a failure
    interrupted_case("no_done", None)


def test_provider_error_event_after_content_is_stream_interrupted():
    interrupted_case("error_event_after=2", 2)


def test_provider_error_event_then_done_is_stream_interrupted():
    # vLLM sends [DONE] after its error event: the client still gets no [DONE]
    interrupted_case("error_event_after=2,done_after_error", 2)


def test_total_timeout_mid_stream_is_stream_interrupted():
    with pipeline(provider={"timeout_total": "1500ms"}) as (s, m):
        up = "tokens=40,drip=100"
        full = expected_stream(m, "tokens=40", "mock/" + up)
        r = stream(s, chat_body("mock/" + up, True), timeout=10)
        check(r.head is not None, f"no response ({r.end})")
        assert_status(r.head, 200, "stream past timeout_total")
        got = r.data
        n = len(got) - 1
        check(n >= 3, f"only {n} events before the interruption: {r.describe()}")
        assert_interrupted(r, full[:n], "stream past timeout_total")
        took = r.data_times()[-1]
        check(1.2 <= took <= 2.8, f"interrupted {took:.2f}s after the request "
              f"(timeout_total = 1500ms)")


def test_server_healthy_after_interrupted_streams():
    with pipeline() as (s, m):
        for sc in ("drop_after=1", "malformed_after=1", "error_event_after=1", "no_done"):
            stream(s, chat_body("mock/" + sc, True))
        want = expected_stream(m, "tokens=5", "gpt-test")
        assert_stream_exact(stream(s, chat_body("gpt-test", True)), want, "stream afterwards")
        m.wait_stats(lambda x: x["active"] == 0, 2, "mock has no active answer")


# ================================================================================================
# Provider errors before the stream

KEPT = (400, 401, 403, 404, 422, 429)


def provider_message(status):
    import http.client
    return f"mock: HTTP {status} {http.client.responses[status]}"


def test_provider_4xx_status_and_message_kept_sync():
    with pipeline() as (s, m):
        for st in KEPT:
            r = sync(s, chat_body(f"mock/status={st}"))
            e = assert_upstream_error(r, st, what=f"sync, provider {st}")
            check(provider_message(st) in e["message"],
                  f"provider {st}: message {e['message']!r} lacks {provider_message(st)!r}")


def test_provider_4xx_status_and_message_kept_stream():
    with pipeline() as (s, m):
        for st in KEPT:
            r = stream(s, chat_body(f"mock/status={st}", True))
            e = stream_error(r, st, what=f"stream, provider {st}")
            check(provider_message(st) in e["message"],
                  f"provider {st}: message {e['message']!r} lacks {provider_message(st)!r}")


def test_provider_5xx_becomes_502():
    with pipeline() as (s, m):
        for st in (500, 502, 503, 504, 529):
            e = assert_upstream_error(sync(s, chat_body(f"mock/status={st}")), 502,
                                      what=f"sync, provider {st}")
            check(f"mock: HTTP {st}" in e["message"], f"provider {st}: message {e['message']!r}")
            stream_error(stream(s, chat_body(f"mock/status={st}", True)), 502,
                         what=f"stream, provider {st}")


def test_provider_429_retry_after_passed_on():
    with pipeline() as (s, m):
        r = sync(s, chat_body("mock/status=429,retry_after=2"))
        assert_upstream_error(r, 429, what="sync 429")
        eq(r.header("retry-after"), "2", "Retry-After on a sync 429")
        rs = stream(s, chat_body("mock/status=429,retry_after=7", True))
        stream_error(rs, 429, what="stream 429")
        eq(rs.header("retry-after"), "7", "Retry-After on a streamed 429")


def test_provider_error_shapes_all_give_an_envelope():
    with pipeline() as (s, m):
        for shape in ("openai", "flat", "text", "ollama"):
            for st, want in ((400, 400), (422, 422), (503, 502)):
                up = f"mock/status={st},error_shape={shape}"
                for streamed in (False, True):
                    what = f"{'stream' if streamed else 'sync'}, {st} error_shape={shape}"
                    if streamed:
                        e = stream_error(stream(s, chat_body(up, True)), want, what=what)
                    else:
                        e = assert_upstream_error(sync(s, chat_body(up)), want, what=what)
                    check(provider_message(st) in e["message"],
                          f"{what}: message {e['message']!r} lacks {provider_message(st)!r}")


def test_sync_error_instead_of_answer_is_502():
    with pipeline() as (s, m):
        e = assert_upstream_error(sync(s, chat_body("mock/error_event_after=1")), 502,
                                  what="sync, provider 503")
        check("mock: error instead of the answer" in e["message"], f"message {e['message']!r}")


def test_sync_broken_answers_are_502():
    with pipeline() as (s, m):
        assert_upstream_error(sync(s, chat_body("mock/drop_after=1")), 502,
                              what="sync answer cut in the middle")
        assert_upstream_error(sync(s, chat_body("mock/malformed_after=1")), 502,
                              what="sync answer that is not JSON")


# ================================================================================================
# Timeouts and connect failures

def test_stall_head_beyond_first_byte_timeout_is_504():
    with pipeline(provider={"timeout_first_byte": "1s"}) as (s, m):
        for streamed in (False, True):
            what = "stream" if streamed else "sync"
            t0 = time.monotonic()
            if streamed:
                r = stream(s, chat_body("mock/stall_head=4000", True))
                e = stream_error(r, 504, what=f"{what}, head 4 s late")
            else:
                e = assert_upstream_error(sync(s, chat_body("mock/stall_head=4000")), 504,
                                          what=f"{what}, head 4 s late")
            took = time.monotonic() - t0
            check(re.search(r"first[ _-]?byte", e["message"], re.I),
                  f"{what}: 504 message does not name the first-byte phase: {e['message']!r}")
            check(0.8 <= took <= 2.5, f"{what}: 504 after {took:.2f}s (timeout_first_byte = 1s)")


def test_idle_timeout_before_content_is_504():
    with pipeline(provider={"timeout_idle": "1s"}) as (s, m):
        t0 = time.monotonic()
        r = stream(s, chat_body("mock/role_then_stall=4000", True))
        e = stream_error(r, 504, what="role chunk then 4 s of silence, timeout_idle = 1s")
        took = time.monotonic() - t0
        check(re.search(r"idle", e["message"], re.I),
              f"504 message does not name the idle phase: {e['message']!r}")
        check(0.8 <= took <= 2.5, f"504 after {took:.2f}s (timeout_idle = 1s)")


def test_total_timeout_before_content_is_504():
    with pipeline(provider={"timeout_total": "1s"}) as (s, m):
        for streamed in (False, True):
            what = "stream" if streamed else "sync"
            t0 = time.monotonic()
            if streamed:
                e = stream_error(stream(s, chat_body("mock/slow_ttft=4000", True)), 504,
                                 what=f"{what}, first token after 4 s, timeout_total = 1s")
            else:
                e = assert_upstream_error(sync(s, chat_body("mock/slow_ttft=4000")), 504,
                                          what=f"{what}, answer after 4 s, timeout_total = 1s")
            took = time.monotonic() - t0
            check(re.search(r"total", e["message"], re.I),
                  f"{what}: 504 message does not name the total timeout: {e['message']!r}")
            check(0.8 <= took <= 2.5, f"{what}: 504 after {took:.2f}s (timeout_total = 1s)")


def test_connect_refused_is_502_naming_the_provider():
    from harness import free_port
    dead = f"http://127.0.0.1:{free_port()}/v1"
    extra = catalog(dead, name="deadend", models={"m": "deadend/x"})
    with Server(server=SERVER, extra=extra) as s:
        for streamed in (False, True):
            what = "stream" if streamed else "sync"
            t0 = time.monotonic()
            if streamed:
                e = stream_error(stream(s, chat_body("m", True)), 502, provider="deadend",
                                 what=f"{what} to a closed port")
            else:
                e = assert_upstream_error(sync(s, chat_body("m")), 502, provider="deadend",
                                          what=f"{what} to a closed port")
            check("deadend" in e["message"], f"{what}: message does not name the provider: "
                  f"{e['message']!r}")
            check(e["code"] and "connect" in e["code"],
                  f"{what}: code {e['code']!r} (expected upstream_connect_failed or similar)")
            took = time.monotonic() - t0
            check(took < 2, f"{what}: connection refused answered after {took:.2f}s")


# ================================================================================================
# Limits

def test_sync_response_over_max_response_body_is_502():
    with pipeline(provider={"max_response_body": "4K"}) as (s, m):
        r = sync(s, chat_body("mock/huge=1000"))
        assert_status(r, 200, "sync answer of about 1.3 KB under max_response_body = 4K")
        assert_upstream_error(sync(s, chat_body("mock/huge=8000")), 502,
                              "upstream_response_too_large", what="sync answer of 8 KB")
        assert_upstream_error(sync(s, chat_body("mock/huge=3000000")), 502,
                              "upstream_response_too_large", what="sync answer of 3 MB")


def test_max_response_body_does_not_bound_streams():
    with pipeline(provider={"max_response_body": "4K"}) as (s, m):
        want = expected_stream(m, "huge=20000", "mock/huge=20000")
        assert_stream_exact(stream(s, chat_body("mock/huge=20000", True)), want,
                            "a 20 KB stream with max_response_body = 4K")


# ================================================================================================
# Cancellation

def cancel_case(scenario, read_events, how):
    with pipeline() as (s, m):
        c = s.connect(10)
        post(c, chat_body("mock/" + scenario, True))
        if read_events:
            r = read_sse(c, 10, stop=lambda res: len(res.data) >= read_events)
            check(r.end == "stopped", f"stream ended before {read_events} events: {r.describe()}")
        else:
            m.wait_stats(lambda x: x["active"] == 1, 3, "the mock is answering")
            time.sleep(0.3)
        before = m.stats()
        eq(before["active"], 1, "mock answers in progress before the client leaves")
        t0 = time.monotonic()
        (c.reset if how == "rst" else c.close)()
        st = m.wait_stats(lambda x: x["aborted"] > before["aborted"] and x["active"] == 0, 1.0,
                          f"the upstream is aborted when the client {how}s")
        took = time.monotonic() - t0
        eq(st["completed"], before["completed"], "completed answers (the stream must not finish)")
        check(took <= 1.0, f"upstream aborted {took:.2f}s after the client left")
        want = expected_stream(m, "tokens=5", "gpt-test")
        assert_stream_exact(stream(s, chat_body("gpt-test", True)), want, "a stream afterwards")


def test_client_close_mid_stream_aborts_upstream():
    cancel_case("tokens=100,drip=100", 3, "close")


def test_client_reset_mid_stream_aborts_upstream():
    cancel_case("tokens=100,drip=100", 3, "rst")


def test_client_close_before_first_content_aborts_upstream():
    # nothing has reached the client yet (role chunk held): leaving must still abort
    cancel_case("role_then_stall=10000", 0, "close")


# ================================================================================================
# Backpressure

HUGE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HUGE_TEXT = HUGE_ALPHABET * 18      # the mock's huge text is this cycle; pieces are <= 1024


def test_slow_client_pauses_upstream_with_bounded_memory():
    n = 50_000_000
    with pipeline(server={"memory": "64M"}, provider={"timeout_idle": "60s",
                                                      "timeout_total": "5m"}) as (s, m):
        base = memory_in_use(s)
        c = s.connect(timeout=60, rcvbuf=16384)
        post(c, chat_body(f"mock/huge={n}", True))
        m.wait_stats(lambda x: x["active"] == 1, 3, "the mock is streaming")
        worst = 0
        for _ in range(8):              # 4 s without reading
            time.sleep(0.5)
            worst = max(worst, memory_in_use(s))
        st = m.stats()
        eq(st["active"], 1, "the mock's stream still in progress after 4 s (paused, not "
           "buffered or dropped)")
        eq(st["completed"], 0, "answers the mock completed while the client did not read")
        check(worst - base < 8 << 20, f"memory in use grew by {(worst - base) >> 10} KiB "
              f"(from {base >> 10} KiB) while the client did not read")

        state = {"off": 0, "content_events": 0, "done": False, "bad": None, "finish": None,
                 "after_done": 0}

        def on_item(kind, value, t):
            if state["bad"]:
                return
            if kind != "data":
                state["bad"] = f"non-data line {value[:100]!r}"
                return
            if value == "[DONE]":
                state["done"] = True
                return
            if state["done"]:
                state["after_done"] += 1
                return
            doc = json.loads(value)
            if doc.get("error"):
                state["bad"] = f"error event at byte {state['off']}: {value[:300]}"
                return
            ch = doc["choices"][0]
            if ch.get("finish_reason"):
                state["finish"] = ch["finish_reason"]
            piece = (ch.get("delta") or {}).get("content") or ""
            if piece:
                o = state["off"]
                want = HUGE_TEXT[o % 64:o % 64 + len(piece)]
                if piece != want or len(piece) > 1024:
                    state["bad"] = f"content at offset {o} is not the mock's text: {piece[:80]!r}"
                    return
                state["off"] += len(piece)
                state["content_events"] += 1

        r = read_sse(c, timeout=150, on_item=on_item, keep=False, gap=10)
        check(state["bad"] is None, f"huge stream: {state['bad']}")
        check(r.end == "done", f"huge stream: {r.end} after {r.bytes} bytes "
              f"({state['off']} of {n} content bytes) once the client read again; mock stats "
              f"{json.dumps(m.stats())}")
        eq(state["off"], n, "content bytes received by the slow client")
        check(state["done"] and state["after_done"] == 0, "huge stream: no [DONE] at the end")
        eq(state["finish"], "stop", "finish_reason of the huge stream")
        eq(state["content_events"], (n + 1023) // 1024, "content events")


test_slow_client_pauses_upstream_with_bounded_memory.timeout = 180


# ================================================================================================
# TLS

def tls_case(ca_name):
    d = make_test_ca("localhost")
    mock = Mock(tls_cert=f"{d}/localhost.pem", tls_key=f"{d}/localhost.key",
                ca_file=f"{d}/ca.pem")
    return pipeline(provider={"ca_file": f"{d}/{ca_name}"}, mock=mock)


def assert_sync_and_stream_whole(s, m, how):
    """gpt-test (the mock's tokens=5) asked sync and streamed: each answer exactly the mock's."""
    want = direct_sync(m, "tokens=5").replace(b'"model":"tokens=5"', b'"model":"gpt-test"')
    r = sync(s, chat_body("gpt-test"))
    assert_status(r, 200, f"sync {how}")
    eq(r.body, want, f"sync body {how}")
    want = expected_stream(m, "tokens=5", "gpt-test")
    assert_stream_exact(stream(s, chat_body("gpt-test", True)), want, f"stream {how}")


def test_tls_provider_with_its_ca_works():
    with tls_case("ca.pem") as (s, m):
        check(m.base_url.startswith("https://localhost:"), f"mock base_url {m.base_url}")
        assert_sync_and_stream_whole(s, m, "over TLS")
        eq(m.requests()[0]["headers"].get("authorization"), "Bearer sk-test",
           "Authorization over TLS")


def test_tls_streams_share_one_parse_of_a_full_ca_bundle():
    # A ca_file as large as the embedded bundle (Mozilla's ~140 roots, then the test CA): 30
    # streams at once, each on a new TLS connection. libcurl copied the bundle into every
    # connection and BearSSL parsed it into trust anchors for each (~340 KiB a stream, and
    # ~40 ms of CPU per connection with nothing else running); with patch 08 they share one
    # parse and the bundle itself.
    d = make_test_ca("localhost")
    roots = os.path.join(ROOT_DIR, "vendor", "src", "ca-certificates", "mozilla")
    names = sorted(f for f in os.listdir(roots) if f.endswith(".crt"))
    check(len(names) > 100, f"only {len(names)} roots in {roots} (run make first)")
    with open(f"{d}/big.pem", "wb") as out:
        for f in names:
            out.write(open(os.path.join(roots, f), "rb").read())
        out.write(open(f"{d}/ca.pem", "rb").read())
    n = 30
    mock = Mock(tls_cert=f"{d}/localhost.pem", tls_key=f"{d}/localhost.key", ca_file=f"{d}/ca.pem")
    with pipeline(provider={"ca_file": f"{d}/big.pem"}, mock=mock) as (s, m):
        assert_sync_and_stream_whole(s, m, "with the full bundle")
        base = memory_in_use(s)
        conns = []
        for _ in range(n):
            c = s.connect(15)
            post(c, chat_body("mock/tokens=20,tps=4", True))
            conns.append(c)
        m.wait_stats(lambda st: st["active"] >= n, 20, f"{n} TLS streams running at the mock")
        per = (memory_in_use(s) - base) / n
        check(per < 128 * 1024, f"{per / 1024:.0f} KiB of memory a TLS stream (the CA bundle copied or "
              f"parsed per connection?)")
        for c in conns:
            c.close()


def test_tls_providers_naming_one_ca_file_both_verify():
    # Three providers, two naming the same ca_file (loaded once, shared), one another file with
    # the same CA: each verifies the mock's certificate, sync and streamed.
    d = make_test_ca("localhost")
    with open(f"{d}/ca-copy.pem", "wb") as out:
        out.write(open(f"{d}/ca.pem", "rb").read())
    mock = Mock(tls_cert=f"{d}/localhost.pem", tls_key=f"{d}/localhost.key", ca_file=f"{d}/ca.pem")
    with mock as m:
        extra = "".join(f"\n[provider.{name}]\ntype = openai\nbase_url = {m.base_url}\napi_key = k\nca_file = {d}/{f}\n"
                        for name, f in (("a", "ca.pem"), ("b", "ca.pem"), ("c", "ca-copy.pem")))
        with Server(server=SERVER, extra=extra) as s:
            for name in ("a", "b", "c", "b", "a"):
                r = sync(s, chat_body(f"{name}/tokens=2"))
                assert_status(r, 200, f"sync through provider {name}")
                r = stream(s, chat_body(f"{name}/tokens=2", True))
                check(r.status == 200 and r.data and r.data[-1] == "[DONE]", f"stream through {name}: {r.describe()}")


def test_tls_provider_with_wrong_ca_is_502_tls_failed():
    with tls_case("other-ca.pem") as (s, m):
        for streamed in (False, True):
            what = "stream" if streamed else "sync"
            if streamed:
                e = stream_error(stream(s, chat_body("gpt-test", True)), 502,
                                 "upstream_tls_failed", what=f"{what}, wrong CA")
            else:
                e = assert_upstream_error(sync(s, chat_body("gpt-test")), 502,
                                          "upstream_tls_failed", what=f"{what}, wrong CA")
            check(re.search(r"tls|certificate|ssl", e["message"], re.I),
                  f"{what}: message does not say TLS/certificate: {e['message']!r}")
        eq(m.requests(), [], "requests that reached the mock through a failed TLS handshake")


# ================================================================================================
# Proxies from the environment (libcurl's variables; sluice reads them once at start)

class ForwardProxy:
    """An HTTP forward proxy on a free port, one request per connection: it records each request
    line (absolute-form, as a client of a proxy sends it, or CONNECT for an https:// provider)
    and passes the request on (a CONNECT: answers 200 and relays bytes both ways)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lines = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        with c:
            head, body = recv_head(c)
            if head is None:
                return
            lines = head.split(b"\r\n")
            if lines[0].startswith(b"CONNECT "):
                self.lines.append(lines[0].decode())
                return self.tunnel(c, lines[0].split(b" ")[1], body)
            body = recv_body(c, head, body)
            method, target, version = lines[0].split(b" ")
            self.lines.append(lines[0].decode())
            hp = re.match(rb"http://([^/:]+):(\d+)(/.*)", target)
            if not hp:
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            keep = [l for l in lines[1:] if not re.match(rb"(?i)(proxy-)?connection:", l)]
            req = b"\r\n".join([method + b" " + hp.group(3) + b" " + version] + keep +
                                [b"Connection: close", b"", b""]) + body
            with socket.create_connection((hp.group(1).decode(), int(hp.group(2)))) as up:
                up.sendall(req)
                while True:
                    more = up.recv(65536)
                    if not more:
                        break
                    c.sendall(more)

    @staticmethod
    def tunnel(c, authority, early):
        host, port = authority.rsplit(b":", 1)
        with socket.create_connection((host.decode(), int(port))) as up:
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if early:
                up.sendall(early)
            while True:
                ready, _, _ = select.select([c, up], [], [], 30)
                if not ready:
                    return
                for a in ready:
                    more = a.recv(65536)
                    if not more:
                        return
                    (up if a is c else c).sendall(more)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
              "no_proxy", "NO_PROXY")


def only(**set_vars):
    """An environment with exactly these proxy variables set: every other one unset."""
    env = {v: None for v in PROXY_VARS}
    env.update(set_vars)
    return env


def test_proxy_variables_from_the_environment_are_used():
    """Each variable libcurl reads for an http:// provider, alone: sluice must not take the
    no-proxy shortcut, and the requests go through the proxy (sync and streamed)."""
    for var in ("http_proxy", "all_proxy", "ALL_PROXY"):
        with ForwardProxy() as px:
            with Mock() as m:
                with Server(server=SERVER, extra=catalog(m.base_url),
                            env=only(**{var: f"http://127.0.0.1:{px.port}"})) as s:
                    want = direct_sync(m, "tokens=5").replace(b'"model":"tokens=5"', b'"model":"gpt-test"')
                    r = sync(s, chat_body("gpt-test"))
                    assert_status(r, 200, f"sync through {var}")
                    eq(r.body, want, f"sync body through {var}")
                    r = stream(s, chat_body("gpt-test", True))
                    eq(r.status, 200, f"stream through {var}")
                    eq(len(px.lines), 2, f"requests through the proxy set by {var} ({px.lines})")
                    for line in px.lines:
                        check(line.startswith(f"POST {m.base_url}/chat/completions "),
                              f"{var}: proxy request line {line!r}")


def test_https_provider_through_a_connect_proxy():
    """An https:// provider behind https_proxy: a CONNECT tunnel, then TLS to the provider
    verified with its CA, sync and streamed, on one tunnel kept alive."""
    d = make_test_ca("localhost")
    with ForwardProxy() as px:
        with Mock(tls_cert=f"{d}/localhost.pem", tls_key=f"{d}/localhost.key", ca_file=f"{d}/ca.pem") as m:
            with Server(server=SERVER, extra=catalog(m.base_url, {"ca_file": f"{d}/ca.pem"}),
                        env=only(https_proxy=f"http://127.0.0.1:{px.port}")) as s:
                assert_sync_and_stream_whole(s, m, "through a CONNECT tunnel")
                eq(px.lines, [f"CONNECT localhost:{m.port} HTTP/1.1"], "one tunnel, kept for both requests")


def test_no_proxy_from_the_environment_goes_direct():
    """NO_PROXY (and no_proxy) naming the provider's host: straight to it, proxy unused."""
    for var in ("NO_PROXY", "no_proxy"):
        with ForwardProxy() as px:
            with Mock() as m:
                env = only(http_proxy=f"http://127.0.0.1:{px.port}", **{var: "127.0.0.1"})
                with Server(server=SERVER, extra=catalog(m.base_url), env=env) as s:
                    assert_status(sync(s, chat_body("gpt-test")), 200, f"sync with {var} matching")
                    eq(px.lines, [], f"requests through the proxy despite {var}")
                    eq(len(m.requests()), 1, "requests that reached the mock directly")


def test_http_proxy_uppercase_and_https_proxy_do_not_apply_to_http():
    """libcurl never reads HTTP_PROXY (httpoxy) and https_proxy is for https:// providers: with
    only those set, an http:// provider is reached directly."""
    for var in ("HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        with ForwardProxy() as px:
            with Mock() as m:
                with Server(server=SERVER, extra=catalog(m.base_url),
                            env=only(**{var: f"http://127.0.0.1:{px.port}"})) as s:
                    assert_status(sync(s, chat_body("gpt-test")), 200, f"sync with only {var}")
                    eq(px.lines, [], f"requests through the proxy set by {var}")


def test_unset_proxy_environment_goes_direct():
    """No proxy variable at all (sluice then tells libcurl so on each request rather than have it
    search the environment): requests go straight to the provider."""
    with Mock() as m:
        with Server(server=SERVER, extra=catalog(m.base_url), env={v: None for v in PROXY_VARS}) as s:
            assert_status(sync(s, chat_body("gpt-test")), 200, "sync with no proxy variables")
            eq(len(m.requests()), 1, "requests that reached the mock")


# ================================================================================================
# Many at once

def test_fifty_concurrent_streams_intact():
    n = 50
    with pipeline() as (s, m):
        wants = {}
        for k in range(5, 12):
            wants[k] = expected_stream(m, f"tokens={k}", "mock/CLIENT")
        results = [None] * n
        errors = []

        def one(i):
            k = 5 + i % 7
            up = f"tokens={k},drip=20,key=c{i}"
            try:
                results[i] = (up, k, stream(s, chat_body("mock/" + up, True), timeout=30))
            except Exception as e:     # reported below, with the stream it happened in
                errors.append(f"stream {i}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        took = time.monotonic() - t0
        check(not errors, f"{len(errors)} of {n} streams failed: {errors[:3]}")
        for i, res in enumerate(results):
            check(res is not None, f"stream {i} did not finish")
            up, k, r = res
            want = [p.replace('"model":"mock/CLIENT"', f'"model":"mock/{up}"')
                    for p in wants[k]]
            assert_stream_head(r, up)
            assert_stream_exact(r, want, f"stream {i} of {n} ({up})")
        check(took < 20, f"{n} streams of about 0.3 s each took {took:.1f}s")
        st = m.stats()
        eq(st["active"], 0, "mock answers still active")


test_fifty_concurrent_streams_intact.timeout = 60


def test_more_provider_urls_than_the_parsed_url_table_holds():
    """sluice keeps up to 32 provider URLs parsed; an entry a transfer uses is never replaced, and
    a URL that finds no room is handed to libcurl as a string. 40 providers on 40 paths: all in
    flight at once (32 parsed, 8 not), then one after another (old entries replaced): every
    request reaches its own provider's path and every answer is whole."""
    n = 40
    with Mock() as m:
        root = m.base_url[:-len("/v1")]
        extra = "".join(f"\n[provider.p{i}]\n" + "".join(
            f"{k} = {v}\n" for k, v in dict(PROVIDER, base_url=f"{root}/p{i}/v1").items())
            for i in range(n))
        with Server(server=dict(SERVER), extra=extra) as s:
            want = expected_stream(m, "tokens=3", "CLIENT")
            for rnd, drip in ((0, 100), (1, 0)):
                results, errors = [None] * n, []

                def one(i):
                    up = f"tokens=3,drip={drip},key=u{rnd}-{i}"
                    try:
                        results[i] = (up, stream(s, chat_body(f"p{i}/{up}", True), timeout=30))
                    except Exception as e:
                        errors.append(f"p{i}: {type(e).__name__}: {e}")

                if rnd == 0:  # all at once
                    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(40)
                else:         # one after another, the last providers first
                    for i in reversed(range(n)):
                        one(i)
                check(not errors, f"round {rnd}: {len(errors)} of {n} streams failed: {errors[:3]}")
                for i, (up, r) in enumerate(results):
                    exp = [p.replace('"model":"CLIENT"', f'"model":"p{i}/{up}"') for p in want]
                    assert_stream_head(r, up, provider=f"p{i}")
                    assert_stream_exact(r, exp, f"round {rnd}, p{i}")
                    seen = m.requests(model=up)
                    eq([q["path"] for q in seen], [f"/p{i}/v1/chat/completions"], f"round {rnd}, p{i}: paths")
            eq(m.stats()["peak_active"] >= 33, True, "more streams in flight at once than the table holds")


test_more_provider_urls_than_the_parsed_url_table_holds.timeout = 90


# --- found in review: a busy connection whose client pipelines a lot and reads slowly -----------

def _cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _pipelined_big_answer(s, stream, extra):
    body = json.dumps(chat_body("mock/huge=3000000", stream)).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"X" * extra)
    return sock


def test_full_read_buffer_while_busy_neither_spins_nor_forgets_the_answer():
    # The client pipelines more bytes than the read buffer holds and reads its 3 MB answer
    # slowly: sluice must not spin on the readable socket, and (non-streamed: the body is
    # borrowed, not in the write buffer) must still write the whole answer.
    for stream in (False, True):
        with pipeline() as (s, m):
            sock = _pipelined_big_answer(s, stream, 60000)
            c0 = _cpu_seconds(s.proc.pid)
            time.sleep(2)
            used = _cpu_seconds(s.proc.pid) - c0
            check(used < 0.5, f"stream={stream}: sluice used {used:.2f} CPU seconds in 2 s while "
                  f"the client was not reading (a spinning loop)")
            sock.settimeout(10)
            got = b""
            try:
                while b"0\r\n\r\n" not in got[-64:] and not (not stream and len(got) > 3000000):
                    d = sock.recv(1 << 20)
                    if not d:
                        break
                    got += d
            except socket.timeout:
                fail(f"stream={stream}: the answer stopped after {len(got)} bytes")
            check(len(got) > 3000000, f"stream={stream}: only {len(got)} bytes of a 3 MB answer")
            sock.close()


def test_model_name_with_control_characters_is_refused():
    # It would otherwise reach the x-sluice-model header (response splitting).
    with pipeline() as (s, m):
        c = s.connect()
        post(c, chat_body("mock/a\r\nX-Injected: yes"))
        r = c.read_response()
        assert_error(r, 400, None, what="model name with CR LF")
        eq(r.header("x-injected"), None, "an injected header")


def test_gateway_out_of_memory_mid_answer_is_503_and_never_a_fallback():
    # memory = 1M: its largest run is 512K, so a 600000-byte answer can never be held. That is
    # the gateway's own limit, not the provider's fault: 503 overloaded, the second target is
    # not asked, and the server goes on serving.
    models = {"oom": "mock/huge=600000, mock/tokens=3"}
    with pipeline(server={"memory": "1M"}, models=models) as (s, m):
        c = s.connect()
        post(c, chat_body("oom"))
        r = c.read_response()
        assert_error(r, 503, "overloaded", type="server_error", what="an answer too big for memory")
        by_model = m.stats().get("by_model", {})
        eq(by_model.get("tokens=3", 0), 0, "requests to the fallback target")
        c = s.connect()
        post(c, chat_body("mock/tokens=3"))
        assert_status(c.read_response(), 200, "a small request afterwards")
