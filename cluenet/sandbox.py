"""Run untrusted work (decoding a user's video) in a forked child that can be killed.

    status, data = sandbox.run(task, timeout=60.0)

``task`` is a picklable object with a ``child_main(fd) -> int`` method; ``cluenet.video``
defines the one task kind this project has (probe or sample a clip).  ``status`` says
how the child ended -- ``{"exit": code}`` (negative: killed by that signal) or
``{"timeout": True}`` -- and ``data`` holds every byte the child wrote to ``fd``.

How it works: a persistent server (``python -c "...; serve()"``, started once per
caller process) preloads numpy / av / decord and forks one child per request.  The
child writes its reply to a pipe; the server relays it as chunks, kills the child at
the deadline and reports how it ended.  Large results (frames) go through a private
temporary file the caller names in the task, not through the pipe.

Why not multiprocessing's forkserver: every child it starts re-imports the caller's
``__main__`` script (app.py would import gradio for every clip).  The caller never
unpickles anything that came from a child: only JSON and raw bytes come back.

Limits: this is a crash and hang boundary (a decoder bug kills only the child, with
an address-space limit and a timeout), not a code-execution boundary: the child runs
with the caller's user, files and network.
"""
from __future__ import annotations

import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import VideoError

HEADER = struct.Struct("<Q")               # length prefix of every message
PRELOAD = ("av", "decord")                  # imported once by the server, so children start warm
_CHUNK = 1 << 20
_SERVER_GRACE_S = 10.0                      # caller's backstop on top of the child's timeout
_PKG_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- framing
def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _write_msg(fd: int, kind: bytes, payload: bytes | memoryview) -> None:
    write_all(fd, kind + HEADER.pack(len(payload)))
    write_all(fd, payload)


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytearray | None:
    """Read exactly n bytes (None at EOF); raise TimeoutError past ``deadline``."""
    buf, got = bytearray(n), 0
    view = memoryview(buf)
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        count = os.readv(fd, [view[got:]])
        if count == 0:
            return None
        got += count
    return buf


# ----------------------------------------------------------------------------- the server and its children
def serve() -> None:
    """Server main loop: one pickled (task, timeout) in, the child's chunks + a status out."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 2)  # FFmpeg / decord log lines must not reach the caller's terminal
    write_all(1, b"R")
    while (head := read_exact(0, HEADER.size)) is not None:
        task, timeout = pickle.loads(read_exact(0, HEADER.unpack(head)[0]))  # from our own parent
        status = _serve_one(task, timeout)
        _write_msg(1, b"E", json.dumps(status).encode())


def _serve_one(task: Any, timeout: float) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            code = task.child_main(write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    try:
        timed_out = _relay(read_fd, deadline)
    finally:
        os.close(read_fd)
    return _reap(pid, deadline, timed_out)


def _relay(fd: int, deadline: float) -> bool:
    """Forward the child's bytes to the caller until EOF; True if the deadline passed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return True
        data = os.read(fd, _CHUNK)
        if not data:
            return False
        _write_msg(1, b"D", data)


def _reap(pid: int, deadline: float, timed_out: bool) -> dict[str, Any]:
    while not timed_out:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"exit": os.waitstatus_to_exitcode(status)}
        timed_out = time.monotonic() > deadline
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return {"timeout": True}


def child_setup(max_address_bytes: int, fault: str | None = None) -> None:
    """First thing a child does: detach from the server's pipes and cap its address space.

    ``fault`` is a test hook: ``"segv"`` kills the child, ``"hang"`` sleeps past any timeout.
    """
    import resource

    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)  # the server's pipes are not the child's business
    resource.setrlimit(resource.RLIMIT_AS, (max_address_bytes, max_address_bytes))
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(3600)


def signal_name(code: int) -> str:
    try:
        return f"signal {code}, {signal.Signals(code).name}"
    except ValueError:
        return f"signal {code}"


# ----------------------------------------------------------------------------- in the caller
class _Server:
    """The caller's handle on the server; one request at a time."""

    def __init__(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(_PKG_ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from cluenet.sandbox import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        try:
            ready = read_exact(self.proc.stdout.fileno(), 1, time.monotonic() + 60)
        except TimeoutError:
            ready = None
        if ready != b"R":
            self.close()
            raise VideoError("the decoder process failed to start")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def run(self, task: Any, timeout: float) -> tuple[dict[str, Any], bytearray]:
        """Send a task; return (status, the child's bytes).  Raises TimeoutError, EOFError."""
        blob = pickle.dumps((task, timeout))
        write_all(self.proc.stdin.fileno(), HEADER.pack(len(blob)) + blob)
        out, fd, deadline = bytearray(), self.proc.stdout.fileno(), time.monotonic() + timeout + _SERVER_GRACE_S
        while True:
            head = read_exact(fd, 1 + HEADER.size, deadline)
            body = None if head is None else read_exact(fd, HEADER.unpack(head[1:])[0], deadline)
            if body is None:
                raise EOFError
            if head[:1] == b"E":
                return json.loads(body), out
            out += body


_SERVER: _Server | None = None
_SERVER_LOCK = threading.Lock()


def _forget_server() -> None:
    """In a forked copy of the caller (e.g. a DataLoader worker) the parent's server
    handle and lock are not ours: start afresh."""
    global _SERVER, _SERVER_LOCK
    _SERVER, _SERVER_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_server)


def has_server() -> bool:
    """Whether this process holds a running server (tests: a forked caller must not)."""
    return _SERVER is not None


def run(task: Any, timeout: float, name: str = "the input") -> tuple[dict[str, Any], bytearray]:
    """Run ``task.child_main`` in a forked child of the server, killed after ``timeout`` s.

    A server that stops answering is replaced on the next call; ``name`` goes into the
    error message.
    """
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = _Server()
        try:
            return _SERVER.run(task, timeout)
        except (TimeoutError, EOFError, OSError):
            _SERVER.close()
            _SERVER = None
            raise VideoError(f"decoder service failed while reading {name}") from None
