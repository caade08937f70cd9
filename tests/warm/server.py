"""A warm interpreter that forks the tools for the test suite: each tool start costs 0.05 s instead of 5.

Starting a tool means importing torch, timm and torchvision: 3-8 s of CPU on these two cores, several
hundred times a suite. This server imports them and every tool module once, then, for each shim that
connects (tests/warm/client.py), forks a monitor that forks the tool process: that one takes the shim's
stdin/stdout/stderr descriptors, working directory, environment and argv, and runs the tool's real
``main`` as the interpreter would (exit status, uncaught exceptions, atexit handlers, KeyboardInterrupt).
The monitor reports the tool's pid and then its exit to the shim, and kills the tool if the shim dies
(``kill -9`` of the shim reads as ``kill -9`` of the tool). Pipes are real: the tool writes straight
into the descriptors the shim got from bash or subprocess.

Usage: python tests/warm/server.py FOLDER (writes FOLDER/server.sock, server.pid, ready.json).
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import locale
import os
import random
import select
import signal
import socket
import sys
import traceback

TOOLS = {"dataset": "dataset", "advtrain": "advtrain", "certify": "certify", "ablate": "ablate",
         "plant-backdoor": "plant_backdoor", "influence": "influence", "report": "report",
         "unadv-patch": "unadv_patch", "immunize": "immunize", "render-3db": "render_3db"}
IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONWARNINGS", "LD_LIBRARY_PATH", "LD_PRELOAD",
                   "DRJIT_LIBLLVM_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                   "HF_HUB_OFFLINE", "HF_HOME", "TORCH_HOME")


LIBRARY = ("data", "models", "run", "io", "training", "fit", "adversarial", "evaluation", "transfer", "smoothing",
           "missingness", "backdoor", "influence", "unadversarial", "render3db", "report", "immunize")


def preload() -> None:
    """What the tools' commands import: the tool modules themselves start light (their --help needs no torch),
    so torch, timm, torchvision and every library package are imported here, once, for all the forks."""
    for module in TOOLS.values():
        importlib.import_module("confidently_tools." + module)
    for name in ("torch", "torchvision", "timm"):
        importlib.import_module(name)
    for name in LIBRARY:
        module = importlib.import_module("confidently." + name)
        exported = getattr(module, "__all__", ())
        if exported:
            getattr(module, exported[0])  # a lazy package imports all of its modules on the first name


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 8, 3)
    size = int.from_bytes(data, "big")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the shim went away")
        body += chunk
    return json.loads(body), fds


def _standard_streams(fds: dict[int, int]) -> None:
    """The shim's descriptors as 0, 1, 2 and fresh sys.std* over them, as a new interpreter sets them up."""
    for target in (0, 1, 2):
        if target in fds:
            os.dup2(fds[target], target)
        else:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, target)
            os.close(null)
    for fd in set(fds.values()):
        if fd > 2:
            os.close(fd)
    encoding = locale.getpreferredencoding(False) or "utf-8"

    def text(fd: int, mode: str, **options) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=encoding, **options)

    sys.stdin = sys.__stdin__ = text(0, "r", errors="strict")
    sys.stdout = sys.__stdout__ = text(1, "w", errors="strict", line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, "w", errors="backslashreplace", line_buffering=True)


def _run_tool(request: dict, fds: list[int]) -> None:
    """In the forked tool process: become the requested command line, run it, exit like an interpreter."""
    os.setpgid(0, 0)
    _standard_streams(dict(zip(request["fds"], fds, strict=True)))
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    random.seed()
    code: int = 0
    interrupted = False
    try:
        name = os.path.basename(sys.argv[0])
        importlib.import_module("confidently_tools." + TOOLS[name]).main()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - the interpreter prints any uncaught exception and exits 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _monitor(conn: socket.socket) -> None:
    """Between a shim and its tool process: start the tool, report its pid and exit, kill it if the shim dies."""
    try:
        request, fds = _receive(conn)
    except (ConnectionError, ValueError, OSError):
        os._exit(0)
    runner = os.fork()
    if runner == 0:
        conn.close()
        _run_tool(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {runner}\n".encode())
    exited = os.pidfd_open(runner)
    while True:
        ready, _, _ = select.select([conn, exited], [], [])
        if exited in ready:
            break
        if not conn.recv(64):  # the shim is gone (killed): so is its tool
            try:
                os.killpg(runner, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(runner, 0)
            os._exit(0)
    _, status = os.waitpid(runner, 0)
    reply = f"signal {os.WTERMSIG(status)}\n" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}\n"
    try:
        conn.sendall(reply.encode())
    except OSError:
        pass
    os._exit(0)


def serve(folder: str) -> None:
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(folder, "server.sock"))
    listener.listen(128)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    with open(os.path.join(folder, "ready.json.part"), "w") as handle:
        json.dump({name: os.environ.get(name) for name in IMPORT_TIME_ENV}, handle)
    os.replace(os.path.join(folder, "ready.json.part"), os.path.join(folder, "ready.json"))
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _monitor(conn)
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
