#!/usr/bin/env python3
"""run.py — the integration suite: black-box tests that start the real sluice binary on a free
loopback port and speak raw HTTP to it.

    python3 test/integration/run.py [--bin PATH] [-v] [FILTER...]

Runs every function named test_* in test/integration/test_*.py, in file order; a FILTER (a
substring of "module.name") selects tests. Prints "ok   - name" or "FAIL - name: reason" per test
and ends with one line "N passed, M failed"; exits 1 if any failed. A failing test shows the
tail of the server's stderr and the bytes its connections exchanged. After every test the
servers it started are stopped (SIGTERM, SIGKILL after 5 s) and their stderr is searched for
sanitizer reports, which fail the test (ASan/UBSan builds run the same suite).
Python 3 standard library only.
"""
import argparse
import importlib
import os
import resource
import shutil
import signal
import sys
import time
import traceback

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import harness  # noqa: E402

DEFAULT_TIMEOUT = 45  # seconds a test may run before it is failed


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout()


def discover():
    tests = []
    for f in sorted(os.listdir(HERE)):
        if not (f.startswith("test_") and f.endswith(".py")):
            continue
        try:
            mod = importlib.import_module(f[:-3])
        except Exception as e:           # a broken module is one failing test, not a crash
            err = f"cannot import {f}: {type(e).__name__}: {e}"

            def broken(err=err):
                raise harness.Failure(err)
            tests.append((f"{f[5:-3]}.(import)", broken))
            continue
        fns = [v for k, v in vars(mod).items() if k.startswith("test_") and callable(v)
               and getattr(v, "__module__", None) == mod.__name__]
        fns.sort(key=lambda fn: fn.__code__.co_firstlineno)
        for fn in fns:
            tests.append((f"{f[5:-3]}.{fn.__name__[5:]}", fn))
    return tests


def show(text, limit):
    lines = text.splitlines()
    if len(lines) > limit:
        print(f"       ... ({len(lines) - limit} earlier lines)")
        lines = lines[-limit:]
    for l in lines:
        print("       | " + l[:300])


def teardown():
    """Stop what the test left behind; returns a list of problems found."""
    problems = []
    for c in harness.conns:
        c.close()
    for s in harness.servers:
        died = (not s.stopped and not s.exit_expected
                and s.proc is not None and s.proc.poll() is not None)
        if died:
            problems.append(f"server exited during the test (exit code {s.proc.returncode})")
        s.stop()
        if s.killed:
            problems.append("server did not exit within 5 s of SIGTERM at teardown (killed)")
        if s.sanitizer_report():
            problems.append("sanitizer report in the server's stderr")
    return problems


def report_context(verbose):
    for i, s in enumerate(harness.servers):
        print(f"     server {i + 1} (port {s.port}, exit {s.exit_code}) stderr:")
        show(s.stderr(), 200 if verbose or s.sanitizer_report() else 25)
    shown = [c for c in harness.conns if c.sent or c.received][-4:]
    for c in shown:
        print(f"     connection: sent {c.sent[:600]!r}")
        print(f"                 got  {c.received[:600]!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/x86_64/sluice"))
    ap.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    ap.add_argument("filters", nargs="*")
    opt = ap.parse_args()
    harness.BIN = os.path.abspath(opt.bin)

    # Many-connection tests need descriptors; the server inherits the raised limit too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    signal.signal(signal.SIGALRM, on_alarm)

    tests = discover()
    if opt.filters:
        tests = [t for t in tests if any(f in t[0] for f in opt.filters)]
    passed = failed = 0
    t0 = time.monotonic()
    if not os.access(harness.BIN, os.X_OK):
        print(f"FAIL - binary: {harness.BIN} is missing or not executable")
        print("0 passed, 1 failed")
        return 1
    for name, fn in tests:
        harness.servers.clear()
        harness.conns.clear()
        err = None
        started = time.monotonic()
        signal.alarm(getattr(fn, "timeout", DEFAULT_TIMEOUT))
        try:
            fn()
        except TestTimeout:
            err = f"test did not finish within {getattr(fn, 'timeout', DEFAULT_TIMEOUT)} s"
        except harness.Failure as e:
            err = str(e)
            if opt.verbose:
                traceback.print_exc()
        except Exception as e:
            err = f"{type(e).__name__}: {e}"
            tb = traceback.extract_tb(e.__traceback__)
            here = [f for f in tb if f.filename.startswith(HERE)]
            if here:
                err += f" (at {os.path.basename(here[-1].filename)}:{here[-1].lineno})"
            if opt.verbose:
                traceback.print_exc()
        finally:
            signal.alarm(0)
        try:
            problems = teardown()
        except Exception as e:
            problems = [f"teardown failed: {type(e).__name__}: {e}"]
        if problems:
            err = "; ".join(([err] if err else []) + problems)
        took = time.monotonic() - started
        timing = f" ({took:.1f}s)" if took >= 1 else ""
        if err is None:
            passed += 1
            print(f"ok   - {name}{timing}", flush=True)
        else:
            failed += 1
            print(f"FAIL - {name}: {err}{timing}", flush=True)
            report_context(opt.verbose)
        for d in harness.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        harness.tmpdirs.clear()
    for c in harness.conns:
        c.close()
    print(f"# {len(tests)} tests in {time.monotonic() - t0:.1f}s against {harness.BIN}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
