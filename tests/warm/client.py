"""The shim side of the warm tool launcher (see tests/warm/server.py): stdlib only, started with ``python -S``.

A shim is an executable named after a tool. It hands its argv, working directory, environment and
its own stdin/stdout/stderr descriptors to the warm server, forwards the signals it receives to the
tool process the server forks, and exits the way that process exited (status or signal). When no
server runs, or the environment differs in a variable that acts at import time, it becomes the real
executable instead (``exec``), so a shim is always safe to call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
READY_TIMEOUT = 300.0


def _server_alive(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "server.pid")) as handle:
            os.kill(int(handle.read()), 0)
    except (OSError, ValueError):
        return False
    return True


def _server_env(folder: str) -> dict[str, str | None] | None:
    """The import-time variables the server started with, once it is ready (None: use the real executable)."""
    ready = os.path.join(folder, "ready.json")
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.exists(ready):
        if not _server_alive(folder) or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    with open(ready) as handle:
        return json.load(handle)


def _open_fds() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds


def _run_warm(folder: str) -> int | None:
    """Run through the server; the exit code, or None when the server cannot take this call."""
    wanted = _server_env(folder)
    if wanted is None or any(os.environ.get(name) != value for name, value in wanted.items()):
        return None
    fds = _open_fds()
    header = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(os.path.join(folder, "server.sock"))
    except OSError:
        return None
    socket.send_fds(conn, [len(header).to_bytes(8, "big")], fds)
    conn.sendall(header)
    reply = conn.makefile("r")
    first = reply.readline().split()
    if not first or first[0] != "pid":
        return None
    runner = int(first[1])

    def forward(number, _frame):
        try:
            os.kill(runner, number)
        except ProcessLookupError:
            pass

    for number in FORWARDED:
        signal.signal(number, forward)
    while True:
        try:
            last = reply.readline().split()
            break
        except InterruptedError:
            continue
    if not last:
        return 1
    kind, value = last[0], int(last[1])
    if kind == "signal":
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
    return value


def main(name: str, real: str, folder: str) -> None:
    code = _run_warm(folder)
    if code is None:
        os.execv(real, [real, *sys.argv[1:]])
    os._exit(code)
