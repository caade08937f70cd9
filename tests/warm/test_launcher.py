"""The warm launcher behaves as the real executables do: output, exit status, stdin, signals, kill -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import BIN, ROOT, real_tool_path, tool_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
pytestmark = pytest.mark.skipif(not (BIN / "server.pid").exists(), reason="no warm server (CONFIDENTLY_TEST_COLD)")


def run(executable: str, *args: str, cwd, **options) -> subprocess.CompletedProcess:
    return subprocess.run([executable, *args], cwd=cwd, env=ENV, capture_output=True, timeout=300, **options)


def untimed(log: bytes) -> bytes:
    return re.sub(rb"\[\d\d:\d\d:\d\d\]", b"[time]", log)


def test_a_shim_prints_and_exits_like_the_executable(tmp_path):
    for args in (["export", "demo:digits", "--split", "test", "--limit", "3", "--out", "{}"],
                 ["export", "demo:nothing", "--out", "{}"], ["info", "-"]):
        warm = run(tool_path("dataset"), *[a.format("warm") for a in args], cwd=tmp_path, input=b"")
        real = run(real_tool_path("dataset"), *[a.format("real") for a in args], cwd=tmp_path, input=b"")
        assert warm.returncode == real.returncode
        assert warm.stdout.replace(b"warm", b"real") == real.stdout
        assert untimed(warm.stderr.replace(b"warm", b"real")) == untimed(real.stderr)


def test_stdin_pipes_through(tmp_path):
    exported = run(tool_path("dataset"), "export", "demo:digits", "--split", "test", "--limit", "4", "--out", "d",
                   cwd=tmp_path)
    info = run(tool_path("dataset"), "info", "-", cwd=tmp_path, input=exported.stdout)
    assert info.returncode == 0, info.stderr
    assert b'"count":4' in info.stdout.replace(b" ", b"")


def blocked_on_stdin(tmp_path) -> subprocess.Popen:
    proc = subprocess.Popen([tool_path("dataset"), "info", "-"], cwd=tmp_path, env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)  # connected and reading
    assert proc.poll() is None
    return proc


def test_a_signal_to_the_shim_reaches_the_tool(tmp_path):
    proc = blocked_on_stdin(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM


def test_kill_9_of_the_shim_kills_the_tool(tmp_path):
    proc = blocked_on_stdin(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    started = time.monotonic()
    assert proc.stdout.read() == b""  # EOF: nothing holds the pipe's write end any more, the tool is gone
    assert time.monotonic() - started < 30
    proc.stdin.close()


def test_import_time_variables_that_differ_start_the_real_executable(tmp_path):
    fake = tmp_path / "fake-real"
    fake.write_text("#!/bin/sh\necho real \"$@\"\n")
    fake.chmod(0o755)
    shim = tmp_path / "dataset"
    shim.write_text(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'warm')!r})\n"
                    f"import client\nclient.main('dataset', {str(fake)!r}, {str(BIN)!r})\n")
    shim.chmod(0o755)
    warm = run(str(shim), "--version", cwd=tmp_path)
    assert b"real" not in warm.stdout and b"confidently" in warm.stdout
    cold = subprocess.run([str(shim), "--version"], cwd=tmp_path, capture_output=True, timeout=60,
                          env={**ENV, "PYTHONPATH": str(tmp_path)})
    assert cold.stdout == b"real --version\n"
