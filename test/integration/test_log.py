"""The request log: one line per request on stderr (method, path, status, bytes, duration,
request id), plain or JSON."""
import json
import re

from harness import Server, check, eq, fail

DURATION = re.compile(r"\b\d+(\.\d+)?\s?(ns|us|µs|ms|s)\b|\b(dur\w*|took|elapsed|time|ms)[=:]\s?\d")


def numbers(line):
    """Integers in a log line, alone or with a byte unit (153, 153B, 153b, 153bytes)."""
    return {int(n) for n in re.findall(r"(?<![\w.])(\d+)(?:B|b|bytes)?(?![\w.])", line)}


def test_plain_log_line_has_method_path_status_bytes_duration_id():
    with Server() as s:
        r = s.get("/healthz", {"X-Request-Id": "log-plain-1"})
        line = s.wait_log("log-plain-1")
        check(line is not None, "no stderr line with the request id 'log-plain-1'")
        for part in ("GET", "/healthz", "200"):
            check(re.search(rf"(?<![\w/]){re.escape(part)}(?![\w/])", line),
                  f"log line lacks {part!r}: {line!r}")
        nums = numbers(line)
        check(len(r.body) in nums or len(r.raw) in nums,
              f"log line has neither the body size {len(r.body)} nor the response size "
              f"{len(r.raw)}: {line!r}")
        check(DURATION.search(line), f"log line has no duration: {line!r}")


def test_plain_log_has_one_line_per_request():
    with Server() as s:
        ids = [f"one-line-{i}" for i in range(5)]
        c = s.connect()
        for rid in ids[:3]:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n" % rid.encode())
            c.read_response()
        s.get("/nope", {"X-Request-Id": ids[3]})
        s.chat({"model": "alpha"}, {"X-Request-Id": ids[4]})
        s.wait_log(ids[4])
        lines = s.log_lines()
        for rid in ids:
            hits = [l for l in lines if rid in l]
            eq(len(hits), 1, f"stderr lines with request id {rid}")


def test_plain_log_records_error_statuses():
    with Server() as s:
        s.get("/nope", {"X-Request-Id": "log-404"})
        s.chat({"model": "alpha"}, {"X-Request-Id": "log-400"})
        for rid, status, path in (("log-404", "404", "/nope"),
                                  ("log-400", "400", "/v1/chat/completions")):
            line = s.wait_log(rid)
            check(line, f"no log line for {rid}")
            check(re.search(rf"\b{status}\b", line) and path in line,
                  f"log line for {rid} lacks {status} or {path}: {line!r}")


def test_plain_log_records_a_408():
    with Server(server={"header_timeout": "1s"}) as s:
        c = s.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: log-408\r\n")
        r = c.read_response(3)
        eq(r.status, 408, "status of the unfinished head")
        check(s.wait_log(" 408 "), f"no log line for the 408; stderr: {s.log_lines()[-5:]}")


def test_plain_log_uses_generated_id_when_none_given():
    with Server() as s:
        r = s.get("/v1/models")
        rid = r.header("x-request-id")
        check(rid, "no x-request-id")
        check(s.wait_log(rid), f"no log line with the generated request id {rid!r}")


def test_startup_line_names_the_config():
    with Server() as s:
        text = s.stderr()
        check(s.config_path in text, f"no startup line naming {s.config_path}: {text[:500]!r}")


def json_request_line(s, rid):
    line = s.wait_log(rid)
    check(line is not None, f"no stderr line with the request id {rid!r}")
    try:
        doc = json.loads(line)
    except ValueError:
        fail(f"log line is not JSON: {line!r}")
    check(isinstance(doc, dict), f"log line is not a JSON object: {line!r}")
    return doc


def test_json_log_line_has_the_fields():
    with Server(server={"log_format": "json"}) as s:
        r = s.get("/healthz", {"X-Request-Id": "log-json-1"})
        doc = json_request_line(s, "log-json-1")
        vals = list(doc.values())
        check("GET" in vals, f"no method 'GET' in {doc}")
        check("/healthz" in vals, f"no path '/healthz' in {doc}")
        check("log-json-1" in vals, f"no request id in {doc}")
        status = [k for k, v in doc.items() if v == 200 and not isinstance(v, bool)]
        check(status, f"no status 200 (a number) in {doc}")
        byts = [k for k in doc if "byte" in k.lower() or k.lower() in ("size", "len", "length")]
        check(byts and isinstance(doc[byts[0]], int), f"no byte count (a number) in {doc}")
        check(doc[byts[0]] in (len(r.body), len(r.raw)),
              f"{byts[0]} = {doc[byts[0]]}, response body is {len(r.body)} bytes "
              f"({len(r.raw)} in all)")
        dur = [k for k in doc if re.search(r"dur|ms$|time|took|elapsed|latency", k, re.I)
               and isinstance(doc[k], (int, float)) and not isinstance(doc[k], bool)]
        check(dur, f"no duration (a number) in {doc}")


def test_json_log_every_line_is_an_object():
    with Server(server={"log_format": "json"}) as s:
        s.get("/healthz", {"X-Request-Id": "log-json-2"})
        s.get("/nope")
        s.wait_log("log-json-2")
        bad = []
        for l in s.log_lines():
            try:
                if not isinstance(json.loads(l), dict):
                    bad.append(l)
            except ValueError:
                bad.append(l)
        check(not bad, f"stderr lines that are not JSON objects: {bad[:5]}")


def test_json_log_escapes_quotes_and_backslashes():
    with Server(server={"log_format": "json"}) as s:
        path = '/quo"te\\back'                  # a valid request target, logged as the path
        s.get(path, {"X-Request-Id": "log-json-esc"})
        line = s.wait_log("log-json-esc")
        check(line, "no log line for the request")
        try:
            doc = json.loads(line)
        except ValueError:
            fail(f"log line for path {path!r} is not JSON: {line!r}")
        check(path in doc.values(), f"path {path!r} not logged verbatim: {doc}")


def test_long_paths_log_one_whole_line_with_the_first_512_bytes():
    """A path of 4,000 bytes (quotes and backslashes among them, two bytes each when escaped):
    the plain line and the JSON line both end with a newline, the JSON one is still an object,
    and each holds the path's first 512 bytes."""
    path = "/" + ('a"\\' * 1400)[:3999]
    for fmt in ("plain", "json"):
        with Server(server={"log_format": fmt, "max_header": "16K"}) as s:
            rid = f"log-long-{fmt}"
            s.get(path, {"X-Request-Id": rid})
            s.get("/healthz", {"X-Request-Id": rid + "-next"})
            check(s.wait_log(rid + "-next"), f"{fmt}: no line for the request after the long one")
            lines = [l for l in s.log_lines() if rid in l and rid + "-next" not in l]
            eq(len(lines), 1, f"{fmt}: lines for the long path")
            if fmt == "json":
                try:
                    doc = json.loads(lines[0])
                except ValueError:
                    fail(f"json: the long path's line is not JSON: {lines[0][:200]!r}…")
                eq(doc.get("path"), path[:512], "json: the path logged")
            else:
                check(path[:512] + " " in lines[0], f"plain: the path's first 512 bytes: {lines[0][:200]!r}…")
                check(path[:513] not in lines[0], "plain: more than 512 bytes of the path")

