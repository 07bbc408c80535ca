"""One asyncio child process: its output in a log file, stopped by signal, started again at will.

The demo's ``callboard serve`` nodes (:class:`callboard.demo.cluster.ProcessNode`) and the
test suite's child processes (the sidecar, the operator, agent apps) are the same job: start
an argv with its output appended to a log, tell whether it runs, signal it, wait for it with
a bound, and show the log's tail when something goes wrong. This is the one wrapper for it;
the tests build on it (``tests/support/processes.py``), the package never imports tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ProcessHandle"]


class ProcessHandle:
    """One child process; :meth:`start` again after it exited starts it anew (same log, appended).

    ``env`` defaults to a copy of this process's environment taken now; it is kept, so a
    change to it applies at the next start. ``new_session`` puts the child in its own
    session: a Ctrl-C in the parent's terminal does not reach it, the parent decides.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.env = env if env is not None else dict(os.environ)
        self.cwd = cwd
        self.new_session = new_session
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, pipes: bool = False) -> asyncio.subprocess.Process:
        """Start it; stdout and stderr go to the log, or with ``pipes`` stdin/stdout are pipes."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if pipes else None,
                stdout=asyncio.subprocess.PIPE if pipes else log,
                stderr=log if pipes else asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        return self.proc

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        """Started and not exited (as far as asyncio has reaped it)."""
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        """The whole log ("" before the first start)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The log's last ``lines`` lines, for an error message."""
        return "\n".join(self.log().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Send ``sig`` while it runs; nothing once it exited. It must have been started."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """The exit code; ``TimeoutError`` (it is left running) after ``timeout`` seconds."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, timeout: float) -> int:
        """SIGTERM (the graceful way out), SIGKILL after ``timeout``; the exit code (0: never started)."""
        if self.proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            await self.kill()
        return self.proc.returncode if self.proc.returncode is not None else 0

    async def kill(self) -> None:
        """SIGKILL and reap (no drain, no clean-up in the child); nothing when it is not running."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
