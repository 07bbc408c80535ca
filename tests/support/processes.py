"""Processes the tests start: a free port to give them, and the wrapper that runs them.

:class:`ChildProcess` is the one wrapper of asyncio tests (the sidecar, the operator,
agent apps): the package's own :class:`callboard._process.ProcessHandle` (which the demo's
``callboard serve`` nodes use too), with waits that fail the test, showing the log's tail,
instead of raising or hanging. :class:`LoggedProcess` is its
synchronous counterpart for the control plane, whose fixture is not async: it also runs
each component in its own process group and makes it die with the test process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from callboard._process import ProcessHandle
from callboard.demo.redis import free_port

__all__ = ["STOP_GRACE", "ChildProcess", "LoggedProcess", "free_port"]

#: Seconds between SIGTERM and SIGKILL when stopping a process.
STOP_GRACE = 10.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the child when the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class LoggedProcess:
    """A background process with its output in a log file, stopped with its whole group.

    It runs in its own process group (``stop`` reaches every child it started) and, on
    Linux, gets SIGTERM when the test process dies, even by SIGKILL: nothing outlives a run.
    """

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        """Start ``argv`` with ``env``; stdout and stderr go to the log (appended)."""
        with self.log_path.open("ab") as logf:
            logf.write(("$ " + " ".join(self.argv) + "\n").encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: killpg reaches every child
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def exited(self) -> int | None:
        """The exit code, or None while it runs (or before it started)."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        popen = self.popen
        if popen is None:
            return
        pgid = popen.pid  # start_new_session: the group id is the leader's pid
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=grace)
        # SIGKILL whatever is left in the group (the leader, or children it left behind).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ChildProcess(ProcessHandle):
    """The package's process wrapper, for a test: a wait that runs out fails the test.

    Unlike :meth:`ProcessHandle.stop`, :meth:`stop` never SIGKILLs quietly: a process that
    outlives its SIGTERM by ``timeout`` is a failure the test must show.
    """

    def check_alive(self) -> None:
        """Fail the test, with the log's tail, when the process has exited."""
        if self.proc is not None and self.proc.returncode is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    async def wait(self, timeout: float, *, after: str = " later") -> int:
        """The exit code; fails the test when it still runs after ``timeout`` seconds."""
        try:
            return await super().wait(timeout)
        except TimeoutError:
            pytest.fail(f"{self.name} still runs {timeout}s{after}:\n{self.log()[-4000:]}")

    async def stop(self, timeout: float) -> int:
        """SIGTERM (the graceful way out) and wait for the exit."""
        if self.running:
            self.signal(signal.SIGTERM)
        return await self.wait(timeout, after=" after SIGTERM")
