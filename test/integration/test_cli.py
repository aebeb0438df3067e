"""The command line: --version, --help, unknown options, --check (good and bad configs, errors
with FILE:LINE:), --healthcheck, --listen, ${VAR} expansion, a bad config at start."""
import os
import socket
import time

from harness import (CATALOG, Server, assert_status, check, eq, free_port, make_config, run_cli,
                     write_file)

VERSION = open(os.path.join(os.path.dirname(__file__), "../../VERSION")).read().strip()

GOOD = """; a config using every kind of value
[server]
listen = 127.0.0.1:18080
memory = 8M
max_connections = 100
max_request_body = 512K
max_header = 16K
header_timeout = 500ms
idle_timeout = 1m
drain_timeout = 3s
api_keys = k1, k2
log_format = json
""" + CATALOG


def check_config(text):
    path = write_file("check.ini", text)
    code, out, err = run_cli(["--check", "-c", path])
    return path, code, out + err


def bad_config(lines, bad_line_numbers, what):
    """A config whose given lines (1-based) are errors: --check exits 1 and names each one as
    FILE:LINE:."""
    text = "\n".join(lines) + "\n"
    path, code, out = check_config(text)
    eq(code, 1, f"--check exit code for {what} (output: {out[:400]!r})")
    for n in bad_line_numbers:
        check(f"{path}:{n}:" in out, f"--check output for {what} lacks '{path}:{n}:' "
              f"(line {n}: {lines[n - 1]!r}); output: {out[:600]!r}")


def server_lines(**override):
    keys = {"listen": "127.0.0.1:18080", "memory": "8M"}
    keys.update(override)
    return ["[server]"] + [f"{k} = {v}" for k, v in keys.items()]


# --- simple options -----------------------------------------------------------------------------

def test_version_exits_0():
    code, out, err = run_cli(["--version"])
    eq(code, 0, "--version exit code")
    check(out.startswith(f"sluice {VERSION}"), f"--version output: {out[:200]!r}")


def test_help_exits_0():
    code, out, err = run_cli(["--help"])
    eq(code, 0, "--help exit code")
    check("usage" in (out + err).lower(), f"--help output: {(out + err)[:200]!r}")


def test_unknown_option_exits_2():
    code, out, err = run_cli(["--no-such-option"])
    eq(code, 2, "exit code for an unknown option")
    check(err.strip(), "no message on stderr for an unknown option")


# --- --check ------------------------------------------------------------------------------------

def test_check_good_config_exits_0_with_a_summary():
    path, code, out = check_config(GOOD)
    eq(code, 0, f"--check exit code on a good config (output: {out[:600]!r})")
    check(out.strip(), "--check printed no summary")


def test_check_does_not_start_a_server():
    port = free_port()
    path = write_file("check.ini", make_config(port))
    t0 = time.monotonic()
    code, out, err = run_cli(["--check", "-c", path], timeout=5)
    eq(code, 0, f"--check exit code ({(out + err)[:400]!r})")
    check(time.monotonic() - t0 < 3, "--check took more than 3s")


def test_check_shipped_example_config():
    root = os.path.join(os.path.dirname(__file__), "../..")
    code, out, err = run_cli(["--check", "-c", os.path.join(root, "conf/sluice.ini")])
    eq(code, 0, f"--check conf/sluice.ini exit code (output: {(out + err)[:600]!r})")


def test_check_unknown_key():
    lines = server_lines() + ["max_conections = 10"]
    bad_config(lines, [len(lines)], "an unknown key")


def test_check_unknown_section():
    lines = server_lines() + ["", "[serverr]", "listen = 127.0.0.1:1"]
    bad_config(lines, [len(lines) - 1], "an unknown section")


def test_check_bad_duration():
    for value in ("5x", "ten", "-1s", "1.5.2s"):
        lines = server_lines(header_timeout=value)
        bad_config(lines, [len(lines)], f"header_timeout = {value!r}")


def test_check_bad_size():
    for value in ("8Q", "lots", "-1M", "1.2.3M"):
        lines = server_lines(max_request_body=value)
        bad_config(lines, [len(lines)], f"max_request_body = {value!r}")


def test_check_memory_under_1m():
    lines = server_lines(memory="512K")
    bad_config(lines, [3], "memory = 512K (minimum 1M)")


def test_check_bad_log_format():
    lines = server_lines(log_format="xml")
    bad_config(lines, [len(lines)], "log_format = xml")


def test_check_bad_listen():
    for value in ("127.0.0.1", "127.0.0.1:99999", "nohost:port"):
        lines = server_lines(listen=value)
        bad_config(lines, [2], f"listen = {value!r}")


def test_check_model_target_with_unknown_provider():
    lines = server_lines() + CATALOG.strip("\n").split("\n") + ["", "[model.gamma]",
                                                                "targets = nobody/m"]
    bad_config(lines, [len(lines)], "a model target naming an unknown provider")


def test_check_reports_every_error():
    lines = server_lines() + ["idle_timeout = forever", "max_header = big", "bogus = 1"]
    n = len(lines)
    bad_config(lines, [n - 2, n - 1, n], "three errors in one file")


def test_check_accepts_sizes_and_durations_in_every_unit():
    text = "\n".join(server_lines(memory="1G", max_request_body="1048576", max_header="16K",
                                  header_timeout="250ms", idle_timeout="2m",
                                  drain_timeout="10s")) + "\n" + CATALOG
    path, code, out = check_config(text)
    eq(code, 0, f"--check exit code (output: {out[:600]!r})")


def test_check_missing_file_fails():
    code, out, err = run_cli(["--check", "-c", "/nonexistent/sluice.ini"])
    check(code != 0, "--check on a missing file exited 0")
    check("/nonexistent/sluice.ini" in out + err, f"the missing file is not named: {(out + err)!r}")


def test_bad_config_stops_the_server_at_start():
    port = free_port()
    path = write_file("bad.ini", make_config(port).replace("[server]\n", "[server]\nbogus = 1\n"))
    code, out, err = run_cli(["-c", path], timeout=5)
    eq(code, 1, "exit code of the server on a bad config")
    check(f"{path}:2:" in out + err, f"error not reported as {path}:2: {(out + err)[:400]!r}")


# --- environment expansion ------------------------------------------------------------------------

def test_env_var_expansion():
    port = free_port()
    cfg = make_config(port, {"listen": "127.0.0.1:${SLUICE_IT_PORT}",
                             "api_keys": "${SLUICE_IT_KEYS}"})
    with Server(config=cfg, port=port,
                env={"SLUICE_IT_PORT": str(port), "SLUICE_IT_KEYS": "from-env"}) as s:
        assert_status(s.get("/v1/models", {"Authorization": "Bearer from-env"}), 200,
                      "key from ${SLUICE_IT_KEYS}")
        eq(s.get("/v1/models").status, 401, "status without the key from the environment")


def test_env_var_default_expansion():
    port = free_port()
    cfg = make_config(port, {"api_keys": "${SLUICE_IT_UNSET_VAR:-dflt-key}"})
    os.environ.pop("SLUICE_IT_UNSET_VAR", None)
    with Server(config=cfg, port=port) as s:
        assert_status(s.get("/v1/models", {"Authorization": "Bearer dflt-key"}), 200,
                      "key from ${VAR:-dflt-key} with VAR unset")


# --- --healthcheck and --listen -----------------------------------------------------------------

def test_healthcheck_against_a_running_server_exits_0():
    with Server(server={"api_keys": "secret"}) as s:
        code, out, err = run_cli(["--healthcheck", f"http://127.0.0.1:{s.port}/healthz"])
        eq(code, 0, f"--healthcheck exit code ({(out + err)[:300]!r})")


def test_healthcheck_with_nothing_listening_exits_1():
    port = free_port()
    t0 = time.monotonic()
    code, out, err = run_cli(["--healthcheck", f"http://127.0.0.1:{port}/healthz"], timeout=10)
    eq(code, 1, "--healthcheck exit code with nothing listening")
    check(time.monotonic() - t0 < 5, "--healthcheck took 5s or more to fail")


def test_healthcheck_against_a_non_200_exits_1():
    with Server() as s:
        code, out, err = run_cli(["--healthcheck", f"http://127.0.0.1:{s.port}/nope"])
        eq(code, 1, "--healthcheck exit code against a 404")


def test_listen_option_overrides_the_config():
    config_port, real_port = free_port(), free_port()
    with Server(port=real_port, config=make_config(config_port),
                args=["--listen", f"127.0.0.1:{real_port}"]) as s:
        assert_status(s.get("/healthz"), 200, f"GET /healthz on the --listen port {real_port}")
        try:
            socket.create_connection(("127.0.0.1", config_port), 1).close()
            listening = True
        except OSError:
            listening = False
        check(not listening, f"the config's port {config_port} is listening too")
