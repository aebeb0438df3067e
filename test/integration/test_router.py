"""The router (issue 5): attempt chains planned before dispatch, retries and fallbacks inside the
safe window, meta-routes by cost, speed and balanced, circuit breakers, and what the client sees
of all that (x-sluice-attempts, the failure message listing every attempt).

Every test starts one or more mock providers (test/mock/mock.js, behaviour chosen by the upstream
model name, or changed on the fly with POST /_mock/scenario) and sluice in front of them. What
each failure does is read on the mocks' per-model request counts (/_mock/stats by_model): a
retried target is asked again, a skipped one is not, a stopped chain never reaches the fallback.
In sluice's config lists (comma-separated) scenario items are joined with '+'.
"""
import json
import re
import threading
import time

from harness import (Mock, SSEParser, Server, assert_error, assert_status, check, eq, fail,
                     free_port, make_test_ca, read_sse)

MSGS = [{"role": "user", "content": "hi"}]

# Heartbeats off (nothing before the first content is observable), breakers out of the way
# unless a test is about them.
SERVER = {"stream_heartbeat": "0", "idle_timeout": "30s", "memory": "32M",
          "breaker_failures": "1000"}

PROVIDER = {
    "type": "openai",
    "api_key": "sk-test",
    "timeout_connect": "2s",
    "timeout_first_byte": "5s",
    "timeout_idle": "5s",
    "timeout_total": "30s",
}

# Retries in these tests back off for a few ms, not the default 250 ms .. 5 s.
FAST = {"backoff_base": "10ms", "backoff_max": "20ms"}


# --- configuration --------------------------------------------------------------------------------

def provider(name, base_url, **keys):
    k = dict(PROVIDER, base_url=base_url)
    k.update(keys)
    return f"\n[provider.{name}]\n" + "".join(f"{a} = {b}\n" for a, b in k.items())


def model(name, targets, **keys):
    return section(f"model.{name}", targets=", ".join(targets), **keys)


def route(name, policy, candidates, **keys):
    return section(f"route.{name}", policy=policy, candidates=", ".join(candidates), **keys)


def price(target, inp, out):
    return section(f"price.{target}", input=inp, output=out)


def section(name, **keys):
    return f"\n[{name}]\n" + "".join(f"{a} = {b}\n" for a, b in keys.items())


def mock(name):
    """A mock provider named `name` (its ids are chatcmpl-NAME); run.py stops it after the test."""
    return Mock(name=name).start()


def gateway(text, server=None):
    return Server(server=dict(SERVER, **(server or {})), extra=text).start()


def dead_url():
    return f"http://127.0.0.1:{free_port()}/v1"    # nothing listens there: connect refused


# --- the mocks ------------------------------------------------------------------------------------

def counts(m):
    """Requests the mock received per model string, since its last reset."""
    return m.stats()["by_model"]


def scenario(m, model_name, sc):
    """Requests for model_name behave as scenario sc from now on (None: as their name says)."""
    status, _, body = m._http("POST", "/_mock/scenario", {"model": model_name, "scenario": sc})
    if status != 200:
        fail(f"POST /_mock/scenario {model_name!r} -> {sc!r}: {status} {body[:200]!r}")


def reset(*ms):
    for m in ms:
        m.reset()


# --- the client side ------------------------------------------------------------------------------

def body_of(model_name, streamed, **extra):
    b = {"model": model_name, "messages": MSGS}
    if streamed:
        b["stream"] = True
    b.update(extra)
    return json.dumps(b)


def post(conn, body):
    conn.send_request("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, body)


def sync(s, model_name, timeout=20, **extra):
    c = s.connect(timeout)
    t0 = time.monotonic()
    post(c, body_of(model_name, False, **extra))
    r = c.read_response(timeout)
    r.took = time.monotonic() - t0
    r.streamed = False
    c.close()
    return r


def stream(s, model_name, timeout=20, **extra):
    c = s.connect(timeout)
    t0 = time.monotonic()
    post(c, body_of(model_name, True, **extra))
    r = read_sse(c, timeout, t0=t0)
    r.took = time.monotonic() - t0
    r.conn = c
    r.streamed = True
    return r


def ask(s, model_name, streamed, timeout=20, **extra):
    return (stream if streamed else sync)(s, model_name, timeout, **extra)


def mode(streamed):
    return "stream" if streamed else "sync"


def head_of(r):
    return r.head if r.streamed else r


def describe(r):
    if r.streamed:
        return r.describe(600)
    return repr(r.raw[:600])


def served(r, prov, upstream, attempts, what):
    """A whole successful answer from prov/upstream after `attempts` attempts."""
    h = head_of(r)
    check(h is not None, f"{what}: no response ({describe(r)})")
    assert_status(h, 200, what)
    eq(h.header("x-sluice-provider"), prov, f"{what}: x-sluice-provider")
    eq(h.header("x-sluice-model"), upstream, f"{what}: x-sluice-model")
    eq(h.header("x-sluice-attempts"), str(attempts), f"{what}: x-sluice-attempts")
    if r.streamed:
        check(r.end == "done", f"{what}: the stream did not end properly: {describe(r)}")
        eq(r.data[-1:], ["[DONE]"], f"{what}: last event")
        errs = [p for p in r.data if _error_doc(p)]
        check(not errs, f"{what}: error events in a served stream: {errs[:2]}")
        check(any(is_content(p) for p in r.data), f"{what}: no content: {describe(r)}")
    else:
        doc = r.json()
        eq(doc.get("object"), "chat.completion", f"{what}: object")
        check(doc["choices"][0]["message"].get("content"), f"{what}: empty content")


def failed(r, status, what, code=None):
    """A clean error answer (not a stream) before the commit point; its error object."""
    h = head_of(r)
    check(h is not None, f"{what}: no response ({describe(r)})")
    if r.streamed:
        check(not (h.status == 200 and h.framing == "chunked"),
              f"{what}: expected a {status} error, got a 200 stream: {describe(r)}")
    e = assert_error(h, status, code, what=what)
    check(h.header("x-request-id"), f"{what}: error without x-request-id")
    return e


def _error_doc(p):
    try:
        doc = json.loads(p)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else None


def is_content(p):
    """A content-bearing chunk: text, reasoning, tool call, refusal or a finish."""
    if p == "[DONE]" or _error_doc(p):
        return False
    for ch in json.loads(p).get("choices") or []:
        d = ch.get("delta") or {}
        if d.get("content") or d.get("reasoning_content") or d.get("tool_calls") or \
                d.get("refusal") or ch.get("finish_reason"):
            return True
    return False


def is_role_chunk(p):
    if p == "[DONE]" or _error_doc(p):
        return False
    chs = json.loads(p).get("choices") or []
    return any((ch.get("delta") or {}).get("role") for ch in chs)


def expected_stream(m, upstream, client):
    """What a client asking for `client` must receive when mock m serves `upstream` cleanly: the
    mock's own events (asked directly, as sluice asks it: include_usage on) with the model
    rewritten, the usage chunk dropped (the client did not ask for it), [DONE] last."""
    body = {"model": upstream, "messages": MSGS, "stream": True,
            "stream_options": {"include_usage": True}}
    status, _, raw = m.direct(body)
    if status != 200:
        fail(f"mock asked directly for {upstream!r}: {status} {raw[:300]!r}")
    p = SSEParser()
    items = p.feed(raw)
    out = []
    for kind, v in items:
        if kind != "data":
            continue
        if v == "[DONE]":
            out.append(v)
            continue
        doc = json.loads(v)
        if doc.get("choices") == [] and doc.get("usage") is not None:
            continue
        old, new = f'"model":{json.dumps(upstream)}', f'"model":{json.dumps(client)}'
        check(v.count(old) == 1, f"mock event without exactly one {old}: {v[:200]}")
        out.append(v.replace(old, new))
    return out


def through_content(events, k):
    """The events up to and including the k-th content-bearing one."""
    n = 0
    for i, p in enumerate(events):
        if is_content(p):
            n += 1
            if n == k:
                return events[:i + 1]
    fail(f"fewer than {k} content events in {events}")


def body_bytes(r):
    """The streamed response's body as the client received it, de-chunked (exact bytes)."""
    raw = r.conn.received
    i = raw.find(b"\r\n\r\n")
    check(i >= 0, "no response head in the bytes received")
    rest, out = raw[i + 4:], b""
    while True:
        j = rest.find(b"\r\n")
        check(j >= 0, f"chunked body cut: {rest[:100]!r}")
        size = int(rest[:j].split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[j + 2:j + 2 + size]
        rest = rest[j + 2 + size + 2:]


def assert_clean_stream(r, want, what):
    """Exactly the events `want`, byte for byte (`data: X\\n\\n` each), nothing else."""
    check(r.head is not None, f"{what}: no response ({r.end})")
    assert_status(r.head, 200, what)
    check(r.end == "done", f"{what}: the chunked body did not end properly: {describe(r)}")
    others = [it for it in r.items if it[0] != "data"]
    check(not others, f"{what}: non-data SSE lines {others[:5]}")
    got = r.data
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                fail(f"{what}: event {i} differs:\n  expected {w[:400]}\n  got      {g[:400]}")
        fail(f"{what}: {len(got)} events, expected {len(want)}: extra/missing "
             f"{(got[len(want):] or want[len(got):])[:3]}")
    exact = "".join(f"data: {p}\n\n" for p in want).encode()
    eq(body_bytes(r), exact, f"{what}: the body bytes")
    eq(sum(1 for p in got if is_role_chunk(p)), 1, f"{what}: role chunks")


def assert_interrupted(r, prefix, what):
    """A 200 stream with exactly `prefix`, then one stream_interrupted event, no [DONE]."""
    check(r.head is not None, f"{what}: no response ({r.end})")
    assert_status(r.head, 200, what)
    check(r.end == "done", f"{what}: the chunked body did not end properly after the error "
          f"event: {describe(r)}")
    got = r.data
    check("[DONE]" not in got, f"{what}: data: [DONE] after a failure: {describe(r)}")
    errs = [i for i, p in enumerate(got) if _error_doc(p)]
    eq(len(errs), 1, f"{what}: error events ({describe(r)})")
    eq(errs[0], len(got) - 1, f"{what}: position of the error event")
    eq(got[:-1], prefix, f"{what}: the events before the error event")
    e = _error_doc(got[-1])["error"]
    eq(e.get("code"), "stream_interrupted", f"{what}: error event code")
    eq(e.get("type"), "upstream_error", f"{what}: error event type")
    exact = "".join(f"data: {p}\n\n" for p in got).encode()
    eq(body_bytes(r), exact, f"{what}: the body bytes")
    return e


# ================================================================================================
# Chains: models, provider/model, retries, fallbacks

def test_model_primary_serves_and_fallbacks_are_not_contacted():
    a, b = mock("ma"), mock("mb")
    s = gateway(provider("pa", a.base_url) + provider("pb", b.base_url) +
                model("two", ["pa/one", "pb/two"], retries=2, **FAST))
    for streamed in (False, True):
        reset(a, b)
        r = ask(s, "two", streamed)
        served(r, "pa", "one", 1, f"{mode(streamed)}, healthy primary")
        eq(counts(a), {"one": 1}, f"{mode(streamed)}: requests at the primary")
        eq(counts(b), {}, f"{mode(streamed)}: requests at the fallback")


def test_provider_model_addressed_directly_is_a_chain_of_one():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("other", ["mock/x"], retries=3))   # a [model] does not lend its retries
    for streamed in (False, True):
        reset(m)
        r = ask(s, "mock/status=503+key=direct", streamed)
        e = failed(r, 502, f"{mode(streamed)}, mock/status=503 addressed directly")
        eq(counts(m), {"status=503+key=direct": 1}, f"{mode(streamed)}: requests (no retry)")
        eq(head_of(r).header("x-sluice-attempts"), "1", f"{mode(streamed)}: x-sluice-attempts")
        eq(head_of(r).header("x-sluice-provider"), "mock", f"{mode(streamed)}: x-sluice-provider")
        check("HTTP 503" in e["message"], f"message {e['message']!r} lacks the provider's")


def test_retry_then_success_on_the_same_target():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("flaky-s", ["mock/fail_first=2+key=rs", "mock/backup"], retries=2, **FAST) +
                model("flaky-t", ["mock/fail_first=2+key=rt", "mock/backup"], retries=2, **FAST))
    for streamed, name, up in ((False, "flaky-s", "fail_first=2+key=rs"),
                               (True, "flaky-t", "fail_first=2+key=rt")):
        r = ask(s, name, streamed)
        served(r, "mock", up, 3, f"{mode(streamed)}, 503 twice then success, retries = 2")
        c = counts(m)
        eq(c.get(up), 3, f"{mode(streamed)}: requests at the flaky target")
        eq(c.get("backup"), None, f"{mode(streamed)}: requests at the fallback")


def test_fallback_to_the_second_and_third_target():
    m1, m2, m3 = mock("m1"), mock("m2"), mock("m3")
    s = gateway(provider("p1", m1.base_url) + provider("p2", m2.base_url) +
                provider("p3", m3.base_url) +
                model("three", ["p1/a", "p2/b", "p3/c"], **FAST))
    for streamed in (False, True):
        w = mode(streamed)
        reset(m1, m2, m3)
        scenario(m1, "a", "status=503")
        r = ask(s, "three", streamed)
        served(r, "p2", "b", 2, f"{w}, first target 503")
        eq([counts(m1), counts(m2), counts(m3)], [{"a": 1}, {"b": 1}, {}],
           f"{w}: requests at the three providers (second serves)")

        reset(m1, m2, m3)
        scenario(m1, "a", "status=503")
        scenario(m2, "b", "status=500")
        r = ask(s, "three", streamed)
        served(r, "p3", "c", 3, f"{w}, first 503, second 500")
        eq([counts(m1), counts(m2), counts(m3)], [{"a": 1}, {"b": 1}, {"c": 1}],
           f"{w}: requests at the three providers (third serves)")
        if streamed:
            want = expected_stream(m3, "c", "three")
            assert_clean_stream(r, want, "stream served by the third target")
        else:
            eq(r.json()["id"], "chatcmpl-m3", "sync: the answer is the third provider's")


# ================================================================================================
# The failure table: each class and what it does

# Classes the mock produces on one target: the request to `flaky` behaves as the scenario.
RETRY_CLASSES = [
    ("408", "status=408"), ("409", "status=409"), ("429", "status=429"),
    ("500", "status=500"), ("502", "status=502"), ("503", "status=503"),
    ("504", "status=504"), ("529", "status=529"),
    ("closed before content (after the role chunk)", "role_then_drop"),
    ("closed before content (reset after the role chunk)", "role_then_drop+rst"),
    ("error event before content", "error_event_first"),
]
NEXT_CLASSES = [
    ("401", "status=401"), ("403", "status=403"),
    ("malformed", "malformed_after=0+malformed_close"),
]
STOP_CLASSES = [
    ("400", "status=400", 400), ("404", "status=404", 404), ("422", "status=422", 422),
    ("other 4xx (418)", "status=418", 418), ("other 4xx (413)", "status=413", 413),
]


def class_case(s, m, cls, sc, streamed):
    reset(m)
    scenario(m, "flaky", sc)
    r = ask(s, "cls", streamed)
    return r, counts(m), f"{mode(streamed)}, {cls} ({sc})"


def class_gateway():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("cls", ["mock/flaky", "mock/healthy"], retries=1, **FAST))
    return s, m


def test_failure_classes_that_retry_the_same_target_then_fall_back():
    s, m = class_gateway()
    for cls, sc in RETRY_CLASSES:
        for streamed in (False, True):
            r, c, what = class_case(s, m, cls, sc, streamed)
            served(r, "mock", "healthy", 3, what)
            eq(c, {"flaky": 2, "healthy": 1}, f"{what}: requests (retries = 1: twice, then next)")


def test_closed_before_the_head_is_one_request_per_attempt():
    # The provider reads the request and closes without a response. On a fresh upstream
    # connection an attempt is one request: retries = 1 means exactly two at the flaky target,
    # then the fallback. On a kept-alive connection libcurl itself re-sends a request once on a
    # fresh connection when the reused one closes before a byte of answer (what a stale
    # keep-alive connection looks like; README documents it), so that first attempt may reach
    # the provider twice — never more.
    for warm_first in (False, True):
        for streamed in (False, True):
            s, m = class_gateway()                  # a new sluice: no upstream connection yet
            if warm_first:
                reset(m)
                served(sync(s, "cls"), "mock", "flaky", 1, "a served request (keeps a connection)")
            r, c, what = class_case(s, m, "closed before the head", "drop_head", streamed)
            what += ", upstream connection " + ("reused" if warm_first else "fresh")
            served(r, "mock", "healthy", 3, what)
            want = [{"flaky": 2, "healthy": 1}] + ([{"flaky": 3, "healthy": 1}] if warm_first else [])
            check(c in want, f"{what}: requests {c}, want one of {want} (retries = 1: twice, then next)")


def test_failure_classes_that_move_to_the_next_target_at_once():
    s, m = class_gateway()
    for cls, sc in NEXT_CLASSES:
        for streamed in (False, True):
            r, c, what = class_case(s, m, cls, sc, streamed)
            served(r, "mock", "healthy", 2, what)
            eq(c, {"flaky": 1, "healthy": 1}, f"{what}: requests (no retry despite retries = 1)")


def test_failure_classes_that_stop_and_answer_the_client():
    s, m = class_gateway()
    for cls, sc, status in STOP_CLASSES:
        for streamed in (False, True):
            r, c, what = class_case(s, m, cls, sc, streamed)
            e = failed(r, status, what)
            eq(c, {"flaky": 1}, f"{what}: requests (no retry, no fallback)")
            eq(head_of(r).header("x-sluice-attempts"), "1", f"{what}: x-sluice-attempts")
            eq(head_of(r).header("x-sluice-provider"), "mock", f"{what}: x-sluice-provider")
            eq(head_of(r).header("x-sluice-model"), "flaky", f"{what}: x-sluice-model")
            check(f"HTTP {status}" in e["message"],
                  f"{what}: the message {e['message']!r} is not the provider's")


def test_400_is_not_retried_nor_sent_elsewhere():
    m1, m2 = mock("m1"), mock("m2")
    s = gateway(provider("p1", m1.base_url) + provider("p2", m2.base_url) +
                model("strict", ["p1/status=400+key=bad", "p2/fine"], retries=3, **FAST))
    for streamed in (False, True):
        reset(m1, m2)
        r = ask(s, "strict", streamed)
        e = failed(r, 400, f"{mode(streamed)}, provider 400")
        eq([counts(m1), counts(m2)], [{"status=400+key=bad": 1}, {}],
           f"{mode(streamed)}: requests (a 400 is the client's own error)")
        check(r.took < 1, f"{mode(streamed)}: a 400 answered after {r.took:.2f}s")


def test_401_skips_the_target_without_retrying_it():
    m1, m2 = mock("m1"), mock("m2")
    s = gateway(provider("p1", m1.base_url) + provider("p2", m2.base_url) +
                model("keys", ["p1/status=401+key=k", "p2/fine"], retries=3, **FAST))
    for streamed in (False, True):
        reset(m1, m2)
        r = ask(s, "keys", streamed)
        served(r, "p2", "fine", 2, f"{mode(streamed)}, first provider 401")
        eq([counts(m1), counts(m2)], [{"status=401+key=k": 1}, {"fine": 1}],
           f"{mode(streamed)}: requests (401: next target at once, despite retries = 3)")


def test_connect_error_is_retried_then_falls_back():
    m = mock("m")
    s = gateway(provider("dead", dead_url()) + provider("mock", m.base_url) +
                model("conn", ["dead/x", "mock/ok"], retries=2, **FAST))
    for streamed in (False, True):
        reset(m)
        r = ask(s, "conn", streamed)
        served(r, "mock", "ok", 4, f"{mode(streamed)}, first provider refuses connections")
        eq(counts(m), {"ok": 1}, f"{mode(streamed)}: requests at the fallback")
        check(r.took < 2, f"{mode(streamed)}: took {r.took:.2f}s")
    # the chain spent: the message says connect error for each attempt
    s2 = gateway(provider("dead", dead_url()) + model("conn", ["dead/x"], retries=1, **FAST))
    r = sync(s2, "conn")
    e = failed(r, 502, "sync, only a dead provider")
    eq(e["message"], "all 2 attempts failed: dead/x: connect error; dead/x: connect error",
       "message of a spent chain of connect errors")


def test_tls_error_moves_to_the_next_target_without_retry():
    d = make_test_ca("localhost")
    tls = Mock(tls_cert=f"{d}/localhost.pem", tls_key=f"{d}/localhost.key",
               ca_file=f"{d}/ca.pem", name="tls").start()
    m = mock("m")
    s = gateway(provider("tlsbad", tls.base_url, ca_file=f"{d}/other-ca.pem") +
                provider("mock", m.base_url) +
                model("tls", ["tlsbad/x", "mock/ok"], retries=2, **FAST))
    for streamed in (False, True):
        reset(m)
        r = ask(s, "tls", streamed)
        served(r, "mock", "ok", 2, f"{mode(streamed)}, first provider's certificate untrusted")
        eq(counts(m), {"ok": 1}, f"{mode(streamed)}: requests at the fallback")
    eq(tls.stats()["requests"], 0, "requests that reached the TLS mock (handshakes fail)")


def test_timeout_before_the_head_is_retried_then_falls_back():
    m = mock("m")
    s = gateway(provider("slow", m.base_url, timeout_first_byte="1s") +
                provider("mock", m.base_url) +
                model("th", ["slow/stall_head=4000", "mock/ok"], retries=1, **FAST))
    for streamed in (False, True):
        reset(m)
        r = ask(s, "th", streamed)
        w = f"{mode(streamed)}, head 4 s late, timeout_first_byte = 1s"
        served(r, "mock", "ok", 3, w)
        eq(counts(m), {"stall_head=4000": 2, "ok": 1}, f"{w}: requests")
        check(1.8 <= r.took < 3.5, f"{w}: took {r.took:.2f}s (two 1 s timeouts expected)")


def test_timeout_before_the_first_token_is_retried_then_falls_back():
    m = mock("m")
    s = gateway(provider("slow", m.base_url, timeout_idle="1s") +
                provider("mock", m.base_url) +
                model("tf", ["slow/role_then_stall=4000", "mock/ok"], retries=1, **FAST) +
                model("tt", ["slow/slow_ttft=4000", "mock/ok"], retries=1, **FAST))
    cases = [(False, "tf", "role_then_stall=4000"), (True, "tf", "role_then_stall=4000"),
             (True, "tt", "slow_ttft=4000")]
    for streamed, name, up in cases:
        reset(m)
        r = ask(s, name, streamed)
        w = f"{mode(streamed)}, {up}, timeout_idle = 1s"
        served(r, "mock", "ok", 3, w)
        eq(counts(m), {up: 2, "ok": 1}, f"{w}: requests")
        check(1.8 <= r.took < 3.5, f"{w}: took {r.took:.2f}s (two 1 s timeouts expected)")
        if streamed:
            assert_clean_stream(r, expected_stream(m, "ok", name), f"{w}: the fallback's stream")


test_timeout_before_the_head_is_retried_then_falls_back.timeout = 60
test_timeout_before_the_first_token_is_retried_then_falls_back.timeout = 60


# ================================================================================================
# Backoff, Retry-After, the deadline

def test_429_with_a_short_retry_after_is_waited():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("ra-s", ["mock/status=429+retry_after=1+fail_first=1+key=s", "mock/other"],
                      retries=1, **FAST) +
                model("ra-t", ["mock/status=429+retry_after=1+fail_first=1+key=t", "mock/other"],
                      retries=1, **FAST) +
                model("ra-503", ["mock/status=503+retry_after=1+fail_first=1+key=u",
                                 "mock/other"], retries=1, **FAST) +
                model("ra-date", ["mock/status=429+retry_after=2+retry_after_date+fail_first=1",
                                  "mock/other"], retries=1, **FAST))
    cases = [("ra-s", False, "status=429+retry_after=1+fail_first=1+key=s", 1.0),
             ("ra-t", True, "status=429+retry_after=1+fail_first=1+key=t", 1.0),
             ("ra-503", False, "status=503+retry_after=1+fail_first=1+key=u", 1.0),
             # an HTTP date 2 s ahead, rounded up to the next second: at least 2 s away
             ("ra-date", False, "status=429+retry_after=2+retry_after_date+fail_first=1", 1.95)]
    for name, streamed, up, wait in cases:
        reset(m)
        r = ask(s, name, streamed)
        w = f"{mode(streamed)}, {up}"
        served(r, "mock", up, 2, w)
        eq(counts(m), {up: 2}, f"{w}: requests (the same target after the wait, no fallback)")
        check(wait <= r.took < wait + 1.5,
              f"{w}: answered after {r.took:.2f}s; Retry-After asks for {wait:g}s")


def test_429_with_a_retry_after_beyond_the_deadline_moves_on_at_once():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("ra-long", ["mock/status=429+retry_after=120", "mock/other"],
                      retries=2, **FAST) +
                model("ra-longdate", ["mock/status=429+retry_after=120+retry_after_date",
                                      "mock/other"], retries=2, **FAST) +
                model("ra-dl", ["mock/status=429+retry_after=5+key=dl", "mock/other"],
                      retries=2, deadline="2s", **FAST))
    cases = [("ra-long", "status=429+retry_after=120", "120 s, default deadline 60 s"),
             ("ra-longdate", "status=429+retry_after=120+retry_after_date", "a date 120 s ahead"),
             ("ra-dl", "status=429+retry_after=5+key=dl", "5 s, deadline = 2s")]
    for name, up, why in cases:
        for streamed in (False, True):
            reset(m)
            r = ask(s, name, streamed)
            w = f"{mode(streamed)}, Retry-After {why}"
            served(r, "mock", "other", 2, w)
            eq(counts(m), {up: 1, "other": 1}, f"{w}: requests (next target, no wait)")
            check(r.took < 1, f"{w}: answered after {r.took:.2f}s (no wait expected)")


def test_the_deadline_ends_the_chain_with_504_deadline_exceeded():
    m = mock("m")
    s = gateway(provider("mock", m.base_url, timeout_first_byte="10s") +
                model("dl", ["mock/stall_head=6000", "mock/other"], retries=2,
                      deadline="1500ms", **FAST) +
                model("dl-many", ["mock/stall_head=600+status=503", "mock/other"], retries=10,
                      deadline="1500ms", **FAST))
    for streamed in (False, True):
        w = f"{mode(streamed)}, one attempt stalling past deadline = 1500ms"
        reset(m)
        r = ask(s, "dl", streamed)
        e = failed(r, 504, w, code="deadline_exceeded")
        check(1.4 <= r.took < 2.2, f"{w}: answered after {r.took:.2f}s")
        eq(counts(m), {"stall_head=6000": 1}, f"{w}: requests (no fallback after the deadline)")
        eq(head_of(r).header("x-sluice-attempts"), "1", f"{w}: x-sluice-attempts")
        check(e["message"], f"{w}: empty message")

        w = f"{mode(streamed)}, 503s 600 ms apart, deadline = 1500ms"
        reset(m)
        r = ask(s, "dl-many", streamed)
        e = failed(r, 504, w, code="deadline_exceeded")
        check(1.4 <= r.took < 2.2, f"{w}: answered after {r.took:.2f}s")
        eq(counts(m), {"stall_head=600+status=503": 3}, f"{w}: requests (3 attempts fit)")
        eq(head_of(r).header("x-sluice-attempts"), "3", f"{w}: x-sluice-attempts")
        t = "mock/stall_head=600+status=503"
        eq(e["message"], f"all 3 attempts failed: {t}: 503; {t}: 503; "
           f"{t}: timeout before first token", f"{w}: message")


# ================================================================================================
# The safe window

def test_stream_failing_after_its_role_chunk_falls_back_to_one_clean_stream():
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url) + provider("pb", b.base_url) +
                model("safe", ["pa/role_then_drop", "pb/tokens=5"], retries=1, **FAST) +
                model("safe-err", ["pa/error_event_after=0", "pb/tokens=5"], **FAST) +
                model("safe-bad", ["pa/malformed_after=0", "pb/tokens=5"], **FAST))
    for name, up, n in (("safe", "role_then_drop", 2), ("safe-err", "error_event_after=0", 1),
                        ("safe-bad", "malformed_after=0", 1)):
        w = f"{up} then a healthy fallback"
        want = expected_stream(b, "tokens=5", name)    # direct() counts: before the reset
        reset(a, b)
        r = stream(s, name)
        eq(r.header("x-sluice-provider"), "pb", f"{w}: x-sluice-provider")
        eq(r.header("x-sluice-attempts"), str(n + 1), f"{w}: x-sluice-attempts")
        assert_clean_stream(r, want, w)
        check(all(json.loads(p)["id"] == "chatcmpl-second" for p in r.data if p != "[DONE]"),
              f"{w}: an event from the failed provider reached the client: {describe(r)}")
        eq([counts(a), counts(b)], [{up: n}, {"tokens=5": 1}], f"{w}: requests")


def test_stream_failing_after_content_is_interrupted_and_never_falls_back():
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url) + provider("pb", b.base_url) +
                model("late-drop", ["pa/drop_after=2+tokens=5", "pb/tokens=5"], retries=2,
                      **FAST) +
                model("late-err", ["pa/error_event_after=2+tokens=5", "pb/tokens=5"],
                      retries=2, **FAST) +
                model("late-bad", ["pa/malformed_after=2+tokens=5", "pb/tokens=5"],
                      retries=2, **FAST))
    for name, up in (("late-drop", "drop_after=2+tokens=5"),
                     ("late-err", "error_event_after=2+tokens=5"),
                     ("late-bad", "malformed_after=2+tokens=5")):
        w = f"{up}, retries = 2 and a healthy fallback"
        prefix = through_content(expected_stream(a, "tokens=5", name), 2)
        reset(a, b)
        r = stream(s, name)
        assert_interrupted(r, prefix, w)
        eq(r.header("x-sluice-provider"), "pa", f"{w}: x-sluice-provider")
        eq(r.header("x-sluice-attempts"), "1", f"{w}: x-sluice-attempts")
        eq([counts(a), counts(b)], [{up: 1}, {}],
           f"{w}: requests (no retry, no second provider after content)")


def test_sync_answer_broken_anywhere_still_falls_back():
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url) + provider("pb", b.base_url) +
                model("sync-drop", ["pa/drop_after=3+tokens=5", "pb/tokens=5"], **FAST))
    r = sync(s, "sync-drop")
    served(r, "pb", "tokens=5", 2, "sync, answer cut in the middle then a healthy fallback")
    eq(r.json()["id"], "chatcmpl-second", "sync: id of the answer")
    eq([counts(a), counts(b)], [{"drop_after=3+tokens=5": 1}, {"tokens=5": 1}], "requests")


def test_heartbeats_then_fallback_then_a_clean_stream():
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url, timeout_first_byte="1s") +
                provider("pb", b.base_url) +
                model("hb", ["pa/stall_head=4000", "pb/tokens=5"], **FAST),
                server={"stream_heartbeat": "200ms"})
    want = expected_stream(b, "tokens=5", "hb")
    reset(b)                                        # direct() counts in the stats
    r = stream(s, "hb")
    check(r.head is not None, f"no response: {describe(r)}")
    assert_status(r.head, 200, "heartbeat stream")
    check(r.t_first_byte < 0.6, f"the head came after {r.t_first_byte:.2f}s "
          "(stream_heartbeat = 200ms: it goes early)")
    check(r.end == "done", f"the stream did not end properly: {describe(r)}")
    kinds = [k for k, _ in r.items]
    first_data = kinds.index("data") if "data" in kinds else len(kinds)
    comments = [v for k, v in r.items[:first_data] if k == "comment"]
    check(len(comments) >= 3, f"{len(comments)} keepalive comments in the 1 s before the "
          f"fallback (stream_heartbeat = 200ms): {describe(r)}")
    check(all(v.strip() == "keepalive" for v in comments), f"comments {comments[:3]}")
    check(all(k == "comment" for k in kinds[:first_data]), f"items before the data: {kinds}")
    eq([it for it in r.items[first_data:] if it[0] != "data"], [],
       "SSE lines other than data after the first event")
    eq(r.data, want, "the fallback's events")
    eq(sum(1 for p in r.data if is_role_chunk(p)), 1, "role chunks")
    eq([counts(a), counts(b)], [{"stall_head=4000": 1}, {"tokens=5": 1}], "requests")


def test_heartbeat_head_does_not_name_an_attempt_that_did_not_serve():
    # x-sluice-provider / x-sluice-model / x-sluice-attempts name the attempt that served. A head
    # sent early (heartbeats) goes before that is known: it may leave them out, but must not name
    # the first attempt, which then failed and was replaced by the fallback.
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url, timeout_first_byte="1s") +
                provider("pb", b.base_url) +
                model("hb", ["pa/stall_head=4000", "pb/tokens=5"], **FAST),
                server={"stream_heartbeat": "200ms"})
    r = stream(s, "hb")
    check(r.head is not None and r.end == "done", f"stream: {describe(r)}")
    eq(r.data[-1:], ["[DONE]"], "the fallback served")
    got = {k: r.header(k) for k in ("x-sluice-provider", "x-sluice-model", "x-sluice-attempts")}
    ok = got == {"x-sluice-provider": None, "x-sluice-model": None, "x-sluice-attempts": None} \
        or got == {"x-sluice-provider": "pb", "x-sluice-model": "tokens=5", "x-sluice-attempts": "2"}
    check(ok, f"the early head names {got}, but pb/tokens=5 served after 2 attempts "
          "(expected those, or the headers left out of an early head)")


def test_heartbeats_then_the_whole_chain_failing_is_an_sse_error_event():
    a = mock("first")
    s = gateway(provider("pa", a.base_url, timeout_first_byte="1s") +
                model("hbf", ["pa/stall_head=4000+key=1", "pa/stall_head=4000+key=2"], **FAST),
                server={"stream_heartbeat": "200ms"})
    r = stream(s, "hbf")
    check(r.head is not None, f"no response: {describe(r)}")
    assert_status(r.head, 200, "heartbeat stream whose chain fails")
    check(r.end == "done", f"the stream did not end properly after the error: {describe(r)}")
    check(sum(1 for k, _ in r.items if k == "comment") >= 3, f"keepalives: {describe(r)}")
    eq(len(r.data), 1, f"data events (one error event, no [DONE]): {describe(r)}")
    doc = _error_doc(r.data[0])
    check(doc is not None, f"the event is not an error envelope: {r.data[0][:300]}")
    e = doc["error"]
    eq(sorted(e), ["code", "message", "param", "type"], "error event keys")
    check(e["code"] != "stream_interrupted", "no content was sent: not an interruption")
    eq(e["message"], "all 2 attempts failed: pa/stall_head=4000+key=1: timeout before the head; "
       "pa/stall_head=4000+key=2: timeout before the head", "error event message")
    eq(counts(a), {"stall_head=4000+key=1": 1, "stall_head=4000+key=2": 1}, "requests")


# ================================================================================================
# Circuit breakers

def breaker_gateway(failures=3, cooldown="1s"):
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("brk", ["mock/b-primary", "mock/b-backup"], **FAST) +
                model("solo", ["mock/b-solo"], **FAST) +
                model("pair", ["mock/b-x", "mock/b-y"], **FAST),
                server={"breaker_failures": str(failures), "breaker_cooldown": cooldown})
    return s, m


def test_breaker_opens_after_breaker_failures_and_skips_the_target():
    s, m = breaker_gateway()
    scenario(m, "b-primary", "status=503")
    for i in range(3):
        r = sync(s, "brk")
        served(r, "mock", "b-backup", 2, f"request {i + 1}: primary failing, breaker closed")
    eq(counts(m), {"b-primary": 3, "b-backup": 3}, "requests while the breaker counts failures")
    check(s.wait_log("breaker") is not None, "no log line when the breaker opened")
    for i in range(3):
        r = ask(s, "brk", i % 2 == 1)
        served(r, "mock", "b-backup", 1, f"request {i + 4}: breaker open (primary skipped)")
    eq(counts(m), {"b-primary": 3, "b-backup": 6}, "requests while the breaker is open")


def test_breaker_half_open_success_closes_it():
    s, m = breaker_gateway()
    scenario(m, "b-primary", "status=503")
    for _ in range(3):
        sync(s, "brk")
    t_open = time.monotonic()
    served(sync(s, "brk"), "mock", "b-backup", 1, "breaker open")
    scenario(m, "b-primary", None)            # the provider has recovered
    served(sync(s, "brk"), "mock", "b-backup", 1, "breaker still open (cooldown 1 s)")
    time.sleep(max(0, 1.15 - (time.monotonic() - t_open)))
    reset(m)
    served(sync(s, "brk"), "mock", "b-primary", 1, "after the cooldown: the half-open probe")
    served(sync(s, "brk"), "mock", "b-primary", 1, "after a successful probe: closed")
    eq(counts(m), {"b-primary": 2}, "requests after the cooldown")


def test_breaker_probe_abandoned_by_its_client_does_not_keep_it_open():
    # The half-open probe's client goes away before any answer: that says nothing about the
    # provider, and the breaker must not stay shut for ever (found in review).
    s, m = breaker_gateway()
    scenario(m, "b-primary", "status=503")
    for _ in range(3):
        sync(s, "brk")
    time.sleep(1.15)
    scenario(m, "b-primary", "stall_head=3000")
    c = s.connect(5)
    post(c, body_of("brk", False))
    time.sleep(0.3)                            # the probe is in flight at b-primary
    c.close()                                  # and its client leaves
    time.sleep(0.3)
    scenario(m, "b-primary", None)             # the provider is fine
    reset(m)
    served(sync(s, "brk"), "mock", "b-primary", 1, "after an abandoned probe: probed again")
    eq(counts(m), {"b-primary": 1}, "requests after the abandoned probe")


def test_breaker_half_open_failure_reopens_it_at_once():
    s, m = breaker_gateway()
    scenario(m, "b-primary", "status=503")
    for _ in range(3):
        sync(s, "brk")
    time.sleep(1.15)
    reset(m)
    scenario(m, "b-primary", "status=503")
    served(sync(s, "brk"), "mock", "b-backup", 2, "the half-open probe fails")
    eq(counts(m), {"b-primary": 1, "b-backup": 1}, "requests: one probe")
    served(sync(s, "brk"), "mock", "b-backup", 1,
           "right after a failed probe: open again (one failure, not breaker_failures)")
    eq(counts(m), {"b-primary": 1, "b-backup": 2}, "requests after the failed probe")
    time.sleep(1.15)
    scenario(m, "b-primary", None)
    served(sync(s, "brk"), "mock", "b-primary", 1, "the next cooldown over: probe succeeds")


def test_breaker_half_open_lets_one_request_through():
    s, m = breaker_gateway()
    scenario(m, "b-primary", "status=503")
    for _ in range(3):
        sync(s, "brk")
    time.sleep(1.15)
    reset(m)
    scenario(m, "b-primary", "stall_head=1000")     # healthy again, but the probe is slow
    results = {}

    def probe():
        results["probe"] = sync(s, "brk")
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    m.wait_stats(lambda x: x["active"] == 1, 3, "the probe reaches the primary")
    r = sync(s, "brk")
    served(r, "mock", "b-backup", 1, "a request while the half-open probe is in flight")
    t.join(10)
    check("probe" in results, "the probe did not finish")
    served(results["probe"], "mock", "b-primary", 1, "the probe")
    eq(counts(m), {"b-primary": 1, "b-backup": 1}, "requests (exactly one probe)")
    served(sync(s, "brk"), "mock", "b-primary", 1, "after the probe succeeded")


def test_breaker_all_targets_open_tries_the_one_reopening_first():
    s, m = breaker_gateway(failures=2, cooldown="5s")
    scenario(m, "b-solo", "status=503")
    for i in range(2):
        failed(sync(s, "solo"), 502, f"request {i + 1} to a failing single target")
    eq(counts(m), {"b-solo": 2}, "requests before the breaker opened")
    r = sync(s, "solo")
    failed(r, 502, "a chain whose every target is open still tries one")
    eq(r.header("x-sluice-attempts"), "1", "x-sluice-attempts")
    eq(counts(m), {"b-solo": 3}, "requests: the open target was tried anyway")

    reset(m)
    scenario(m, "b-x", "status=503")
    scenario(m, "b-y", "status=503")
    for i in range(2):
        failed(sync(s, "pair"), 502, f"pair request {i + 1}")
    eq(counts(m), {"b-x": 2, "b-y": 2}, "pair: requests until both breakers opened")
    # b-x opened first (its second failure came first), so it reopens first
    r = sync(s, "pair")
    eq(r.header("x-sluice-attempts"), "1", "both open: attempts")
    eq(counts(m), {"b-x": 3, "b-y": 2}, "both open: the one reopening first (b-x) is tried")
    # b-x failed again and reopens 5 s from now: b-y now reopens first
    r = sync(s, "pair")
    eq(r.header("x-sluice-attempts"), "1", "both open again: attempts")
    eq(counts(m), {"b-x": 3, "b-y": 3}, "both open again: now b-y reopens first and is tried")


def test_client_errors_do_not_open_the_breaker():
    s, m = breaker_gateway(failures=2)
    scenario(m, "b-primary", "status=400")
    for i in range(5):
        failed(sync(s, "brk"), 400, f"request {i + 1}: provider 400")
    eq(counts(m), {"b-primary": 5}, "requests: a 400 says nothing about the provider")
    eq(s.wait_log("breaker", timeout=0.2), None, "a breaker opened on client errors")


# ================================================================================================
# Meta-routes: cost, speed, balanced

COST_TARGETS = ["mock/c-none", "mock/c-out", "mock/c-in", "mock/c-mid"]


def test_cost_ranking_weighs_prices_with_the_request_size():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                route("cheapest", "cost", COST_TARGETS, max_attempts=4, **FAST) +
                price("mock/c-out", "1", "100") +      # cheap input, dear output
                price("mock/c-in", "100", "1") +       # dear input, cheap output
                price("mock/c-mid", "20", "20") +
                route("tie-ab", "cost", ["mock/t-a", "mock/t-b"]) +
                route("tie-ba", "cost", ["mock/t-b", "mock/t-a"]) +
                price("mock/t-a", "2", "2") + price("mock/t-b", "2.0", "2.00"))
    small = {"max_tokens": 1000}                           # ~25 input tokens, 1000 output
    big = {"max_tokens": 1, "messages": [{"role": "user", "content": "x" * 40000}]}  # ~10k in
    orders = [("small request, max_tokens 1000", small, ["c-in", "c-mid", "c-out", "c-none"]),
              ("40 KB request, max_tokens 1", big, ["c-out", "c-mid", "c-in", "c-none"])]
    for what, extra, order in orders:
        reset(m)
        r = sync(s, "cheapest", **extra)
        served(r, "mock", order[0], 1, f"cost route, {what}")
        # the whole ranking, read on a chain where every candidate fails
        reset(m)
        for t in order:
            scenario(m, t, "status=503")
        r = sync(s, "cheapest", **extra)
        e = failed(r, 502, f"cost route, {what}, every candidate failing")
        eq(e["message"], "all 4 attempts failed: " +
           "; ".join(f"mock/{t}: 503" for t in order), f"{what}: the ranking (unpriced last)")
        eq(r.header("x-sluice-attempts"), "4", f"{what}: x-sluice-attempts")
    for name, first in (("tie-ab", "t-a"), ("tie-ba", "t-b")):
        served(sync(s, name), "mock", first, 1, f"{name}: equal prices keep the configured order")


def warm(s, targets, n=3):
    """Measured figures for each target: n streamed requests addressed to it directly."""
    for t in targets:
        for _ in range(n):
            r = stream(s, t, max_tokens=2)
            check(r.status == 200 and r.end == "done", f"warming {t}: {describe(r)}")


def test_speed_ranking_follows_a_mock_that_becomes_slow():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                route("fastest", "speed", ["mock/sp-a", "mock/sp-b"], prior_ttft="1ms",
                      prior_tps="100000", **FAST))
    scenario(m, "sp-a", "slow_ttft=200")
    warm(s, ["mock/sp-a", "mock/sp-b"])
    for i in range(2):
        r = stream(s, "fastest", max_tokens=2)
        served(r, "mock", "sp-b", 1, f"speed route, sp-b fast, sp-a 200 ms to first token ({i})")
    # sp-b becomes slow, sp-a fast: the route learns it from the next answer it measures
    scenario(m, "sp-b", "slow_ttft=1500")
    scenario(m, "sp-a", None)
    r = stream(s, "fastest", max_tokens=2)
    served(r, "mock", "sp-b", 1, "the first request after sp-b slowed (figures not yet updated)")
    check(r.took >= 1.5, f"sp-b answered in {r.took:.2f}s, scenario says 1.5 s to first token")
    for i in range(3):
        r = stream(s, "fastest", max_tokens=2)
        served(r, "mock", "sp-a", 1, f"speed route once sp-b was measured slow ({i})")
        check(r.took < 1, f"sp-a took {r.took:.2f}s")


test_speed_ranking_follows_a_mock_that_becomes_slow.timeout = 60


def test_speed_ranking_uses_priors_until_measured():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                route("fastest", "speed", ["mock/p-a", "mock/p-b"], prior_ttft="500ms",
                      prior_tps="100000", **FAST))
    scenario(m, "p-a", "slow_ttft=100")
    # nothing measured: both have the priors, so the configured order stands
    served(stream(s, "fastest", max_tokens=2), "mock", "p-a", 1, "speed route, nothing measured")
    # p-a measured at ~100 ms beats p-b's prior of 500 ms
    served(stream(s, "fastest", max_tokens=2), "mock", "p-a", 1,
           "speed route, p-a measured (~100 ms) against p-b's prior (500 ms)")
    # p-b measured fast: it now ranks first
    warm(s, ["mock/p-b"], 1)
    served(stream(s, "fastest", max_tokens=2), "mock", "p-b", 1,
           "speed route, p-b measured faster than p-a")


def test_balanced_ranking_blends_normalised_cost_and_speed():
    m = mock("m")
    cands = ["mock/bl-cheap", "mock/bl-fast", "mock/bl-mid"]
    keys = dict(prior_ttft="1ms", prior_tps="100000", **FAST)
    s = gateway(provider("mock", m.base_url) +
                route("bal", "balanced", cands, weight_cost="0.5", weight_speed="0.5", **keys) +
                route("bal-cost", "balanced", cands, weight_cost="1", weight_speed="0", **keys) +
                route("bal-speed", "balanced", cands, weight_cost="0", weight_speed="1", **keys) +
                price("mock/bl-cheap", "1", "1") + price("mock/bl-fast", "11", "11") +
                price("mock/bl-mid", "3", "3"))
    # normalised cost 0 / 1 / 0.2; time to first token 600 / 0 / 120 ms -> speed 1 / 0 / ~0.2
    scenario(m, "bl-cheap", "slow_ttft=600")
    scenario(m, "bl-mid", "slow_ttft=120")
    warm(s, cands)
    for name, want, why in (("bal-cost", "bl-cheap", "weight_speed 0: the cheapest"),
                            ("bal-speed", "bl-fast", "weight_cost 0: the fastest"),
                            ("bal", "bl-mid", "equal weights: 0.5 / 0.5 / ~0.2")):
        for streamed in (False, True):
            r = ask(s, name, streamed, max_tokens=2)
            served(r, "mock", want, 1, f"{name} ({mode(streamed)}), {why}")


test_balanced_ranking_blends_normalised_cost_and_speed.timeout = 60


# ================================================================================================
# fallback_on, max_attempts, what the client sees

def test_fallback_on_narrows_the_classes_that_fall_back():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) + provider("dead", dead_url()) +
                model("fo", ["mock/fo-a", "mock/fo-b"], fallback_on="503, connect", **FAST) +
                model("fo-conn", ["dead/x", "mock/fo-b"], fallback_on="503, connect", **FAST) +
                model("fo-r", ["mock/fo-a", "mock/fo-b"], fallback_on="503", retries=2, **FAST))
    for streamed in (False, True):
        w = mode(streamed)
        reset(m)
        scenario(m, "fo-a", "status=503")
        served(ask(s, "fo", streamed), "mock", "fo-b", 2, f"{w}, 503 with fallback_on = 503")
        eq(counts(m), {"fo-a": 1, "fo-b": 1}, f"{w}: requests (503 falls back)")

        served(ask(s, "fo-conn", streamed), "mock", "fo-b", 2, f"{w}, connect error")

        for sc, status in (("status=500", 502), ("status=429", 429), ("status=401", 401),
                           ("role_then_drop", 502)):
            reset(m)
            scenario(m, "fo-a", sc)
            r = ask(s, "fo", streamed)
            failed(r, status, f"{w}, {sc} not in fallback_on = 503, connect")
            eq(counts(m), {"fo-a": 1}, f"{w}, {sc}: requests (stops: no fallback)")
            eq(head_of(r).header("x-sluice-attempts"), "1", f"{w}, {sc}: attempts")

        # a class outside fallback_on stops; one inside is retried, then falls back
        reset(m)
        scenario(m, "fo-a", "status=500")
        failed(ask(s, "fo-r", streamed), 502, f"{w}, 500 with fallback_on = 503, retries = 2")
        eq(counts(m), {"fo-a": 1}, f"{w}: requests (500 outside fallback_on: no retry either)")
        reset(m)
        scenario(m, "fo-a", "status=503")
        served(ask(s, "fo-r", streamed), "mock", "fo-b", 4, f"{w}, 503, retries = 2")
        eq(counts(m), {"fo-a": 3, "fo-b": 1}, f"{w}: requests (503: retried, then next)")


def test_max_attempts_bounds_a_route_chain():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                route("two-tries", "cost", ["mock/r1", "mock/r2", "mock/r3"], max_attempts=2,
                      **FAST) +
                route("three-tries", "cost", ["mock/r1", "mock/r2", "mock/r3"], max_attempts=3,
                      retries=1, **FAST))
    for streamed in (False, True):
        w = mode(streamed)
        reset(m)
        for t in ("r1", "r2", "r3"):
            scenario(m, t, "status=503")
        r = ask(s, "two-tries", streamed)
        e = failed(r, 502, f"{w}, max_attempts = 2, every candidate failing")
        eq(counts(m), {"r1": 1, "r2": 1}, f"{w}: requests (r3 never tried)")
        eq(head_of(r).header("x-sluice-attempts"), "2", f"{w}: x-sluice-attempts")
        eq(e["message"], "all 2 attempts failed: mock/r1: 503; mock/r2: 503", f"{w}: message")

        reset(m)
        for t in ("r1", "r2", "r3"):
            scenario(m, t, "status=503")
        r = ask(s, "three-tries", streamed)
        e = failed(r, 502, f"{w}, max_attempts = 3, retries = 1")
        eq(counts(m), {"r1": 2, "r2": 1}, f"{w}: requests (retries count against max_attempts)")
        eq(head_of(r).header("x-sluice-attempts"), "3", f"{w}: x-sluice-attempts")
        eq(e["message"], "all 3 attempts failed: mock/r1: 503; mock/r1: 503; mock/r2: 503",
           f"{w}: message")

        reset(m)
        scenario(m, "r1", "status=503")
        served(ask(s, "three-tries", streamed), "mock", "r2", 3,
               f"{w}: third attempt (the second candidate's first) is within max_attempts")
        eq(counts(m), {"r1": 2, "r2": 1}, f"{w}: requests")


def test_failed_chain_lists_every_attempt_and_headers_count_them():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) + provider("dead", dead_url()) +
                provider("slow", m.base_url, timeout_idle="1s") +
                model("all-fail", ["mock/v-503", "dead/v-conn", "slow/v-stall"], **FAST))
    for streamed in (False, True):
        w = mode(streamed)
        reset(m)
        scenario(m, "v-503", "status=503")
        scenario(m, "v-stall", "role_then_stall=4000")
        r = ask(s, "all-fail", streamed)
        e = failed(r, 504, f"{w}, 503, connect error, timeout before first token")
        eq(e["message"], "all 3 attempts failed: mock/v-503: 503; dead/v-conn: connect error; "
           "slow/v-stall: timeout before first token", f"{w}: message")
        h = head_of(r)
        eq(h.header("x-sluice-attempts"), "3", f"{w}: x-sluice-attempts")
        eq(h.header("x-sluice-provider"), "slow", f"{w}: x-sluice-provider (the last attempt)")
        eq(h.header("x-sluice-model"), "v-stall", f"{w}: x-sluice-model (the last attempt)")
        eq(counts(m), {"v-503": 1, "v-stall": 1}, f"{w}: requests")
        check(re.search(r"\ball 3 attempts failed\b", e["message"]), "message prefix")


# ================================================================================================
# More of the contract (README "The router"): capabilities, response too large, what the
# deadline covers, Retry-After passed on, a client leaving mid-chain, breakers count consecutive
# failures only, many fallbacks at once

def test_chain_declared_without_tools_or_images_refuses_such_requests():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("plain", ["mock/p"], tools="false", images="false") +
                model("able", ["mock/p"], tools="true", images="true"))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    image = [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    for what, extra, word in (("tools", {"tools": tools}, "tool"),
                              ("an image", {"messages": image}, "image")):
        e = failed(sync(s, "plain", **extra), 400, f"a request with {what} to tools/images = false")
        eq(e["code"], "unsupported_capability", f"{what}: error code")
        check(word in e["message"], f"{what}: message {e['message']!r} does not say {word!r}")
        served(sync(s, "able", **extra), "mock", "p", 1, f"a request with {what} to a capable chain")
    served(sync(s, "plain"), "mock", "p", 1, "a plain request to tools/images = false")
    eq(counts(m), {"p": 3}, "requests (the refused ones never left sluice)")


def test_response_too_large_stops_the_chain():
    m = mock("m")
    s = gateway(provider("small", m.base_url, max_response_body="4K") +
                provider("mock", m.base_url) +
                model("big", ["small/huge=8000", "mock/ok"], retries=2, **FAST))
    r = sync(s, "big")
    failed(r, 502, "sync answer of 8 KB over max_response_body = 4K", code="upstream_response_too_large")
    eq(counts(m), {"huge=8000": 1}, "requests (response too large: no retry, no fallback)")
    eq(r.header("x-sluice-attempts"), "1", "x-sluice-attempts")


def test_the_deadline_bounds_only_what_comes_before_the_first_content():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("dl", ["mock/tokens=8+drip=250", "mock/other"], deadline="1s", **FAST) +
                model("dl-sync", ["mock/tokens=5+slow_ttft=2500", "mock/other"], deadline="1s",
                      **FAST))
    want = expected_stream(m, "tokens=8", "dl")
    reset(m)
    r = stream(s, "dl")
    check(r.took >= 1.6, f"the stream took {r.took:.2f}s; the mock drips 8 tokens 250 ms apart")
    assert_clean_stream(r, want, "a stream committed early that runs past deadline = 1s")
    eq(counts(m), {"tokens=8+drip=250": 1}, "requests")
    # a non-streamed answer commits only when it is whole: the deadline covers all of it
    r = sync(s, "dl-sync")
    failed(r, 504, "sync answer 2.5 s away, deadline = 1s", code="deadline_exceeded")
    check(0.9 <= r.took < 1.7, f"sync: 504 after {r.took:.2f}s")


def test_the_deadline_with_heartbeats_is_an_sse_error_event():
    m = mock("m")
    s = gateway(provider("mock", m.base_url, timeout_first_byte="10s") +
                model("dl", ["mock/stall_head=5000", "mock/other"], deadline="1s", **FAST),
                server={"stream_heartbeat": "200ms"})
    r = stream(s, "dl")
    check(r.head is not None, f"no response: {describe(r)}")
    assert_status(r.head, 200, "heartbeat stream past its deadline")
    check(r.end == "done", f"the stream did not end properly after the error: {describe(r)}")
    check(0.9 <= r.took < 1.7, f"ended after {r.took:.2f}s (deadline = 1s)")
    check(sum(1 for k, _ in r.items if k == "comment") >= 3, f"keepalives: {describe(r)}")
    eq(len(r.data), 1, f"data events (one error event, no [DONE]): {describe(r)}")
    doc = _error_doc(r.data[0])
    check(doc is not None, f"the event is not an error envelope: {r.data[0][:300]}")
    eq(doc["error"].get("code"), "deadline_exceeded", "error event code")
    eq(counts(m), {"stall_head=5000": 1}, "requests")


def test_a_spent_chain_of_429s_passes_on_the_last_retry_after():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("rl", ["mock/status=429+retry_after=120+key=1",
                             "mock/status=429+retry_after=90+key=2"], retries=1, **FAST))
    for streamed in (False, True):
        reset(m)
        r = ask(s, "rl", streamed)
        w = f"{mode(streamed)}, two targets answering 429 with Retry-After beyond the deadline"
        e = failed(r, 429, w)
        eq(head_of(r).header("retry-after"), "90", f"{w}: Retry-After passed on (the last one)")
        eq(e["message"], "all 2 attempts failed: mock/status=429+retry_after=120+key=1: 429; "
           "mock/status=429+retry_after=90+key=2: 429", f"{w}: message")
        eq(counts(m), {"status=429+retry_after=120+key=1": 1,
                       "status=429+retry_after=90+key=2": 1}, f"{w}: requests")
        check(r.took < 1, f"{w}: took {r.took:.2f}s (nothing to wait for)")


def test_a_client_leaving_during_a_backoff_ends_the_chain():
    m = mock("m")
    s = gateway(provider("mock", m.base_url) +
                model("wait", ["mock/status=429+retry_after=2", "mock/other"], retries=1,
                      **FAST))
    for streamed in (False, True):
        reset(m)
        c = s.connect(5)
        post(c, body_of("wait", streamed))
        m.wait_stats(lambda x: x["completed"] == 1, 3, "the first attempt answered 429")
        time.sleep(0.3)
        c.reset()
        time.sleep(2.5)                 # past the Retry-After the exchange was waiting for
        eq(counts(m), {"status=429+retry_after=2": 1},
           f"{mode(streamed)}: requests after the client left during the wait")
    served(sync(s, "mock/ok"), "mock", "ok", 1, "a request afterwards")


def test_breaker_counts_consecutive_failures_only():
    s, m = breaker_gateway(failures=3)
    for round_ in range(3):
        scenario(m, "b-primary", "status=503")
        for i in range(2):
            served(sync(s, "brk"), "mock", "b-backup", 2, f"round {round_}, failure {i + 1}")
        scenario(m, "b-primary", None)
        served(sync(s, "brk"), "mock", "b-primary", 1,
               f"round {round_}: a success after 2 failures (breaker_failures = 3)")
    eq(counts(m), {"b-primary": 9, "b-backup": 6}, "requests (the breaker never opened)")
    eq(s.wait_log("breaker", timeout=0.2), None, "a breaker opened without 3 consecutive failures")


def test_forty_concurrent_pre_commit_fallbacks_are_each_clean():
    n = 40
    a, b = mock("first"), mock("second")
    s = gateway(provider("pa", a.base_url) + provider("pb", b.base_url) +
                model("safe", ["pa/role_then_drop+drip=20", "pb/tokens=5+drip=20"], **FAST),
                server={"max_connections": "512"})
    want = expected_stream(b, "tokens=5", "safe")
    reset(b)
    results, errors = [None] * n, []

    def one(i):
        try:
            results[i] = stream(s, "safe", timeout=30)
        except Exception as e:          # reported below with the stream it happened in
            errors.append(f"stream {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    check(not errors, f"{len(errors)} of {n} streams failed: {errors[:3]}")
    for i, r in enumerate(results):
        check(r is not None, f"stream {i} did not finish")
        eq(r.header("x-sluice-provider"), "pb", f"stream {i}: x-sluice-provider")
        assert_clean_stream(r, want, f"stream {i} of {n}")
    eq([counts(a), counts(b)], [{"role_then_drop+drip=20": n}, {"tokens=5+drip=20": n}],
       "requests")


test_forty_concurrent_pre_commit_fallbacks_are_each_clean.timeout = 60
