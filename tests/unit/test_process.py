"""callboard._process.ProcessHandle: the one child-process wrapper (demo nodes, test children).

Real child processes of this interpreter; no check depends on how long anything takes (a
bound only keeps a broken wrapper from hanging the test).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from callboard._process import ProcessHandle
from tests.support.waiting import wait_until

#: A child that says it is ready, then ignores SIGTERM and sleeps: only SIGKILL ends it.
STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _python(
    code: str, tmp_path: Path, *, env: Mapping[str, str] | None = None, new_session: bool = False
) -> ProcessHandle:
    argv = [sys.executable, "-c", code]
    return ProcessHandle(
        argv, name="child", log_path=tmp_path / "child.log", env=env, new_session=new_session
    )


async def _wait_for_line(proc: ProcessHandle, line: str) -> None:
    await wait_until(lambda: line in proc.log() or not proc.running, what=f"the line {line!r}")
    assert proc.running, proc.log()


async def test_output_goes_to_the_log_and_a_restart_appends(tmp_path: Path) -> None:
    proc = _python("print('hello')", tmp_path)
    assert proc.log() == ""
    await proc.start()
    assert await proc.wait(30) == 0
    assert not proc.running
    await proc.start()
    assert await proc.wait(30) == 0
    assert proc.log().splitlines() == ["hello", "hello"]
    assert proc.log_tail(1) == "hello"


async def test_env_is_the_one_given_and_kept_for_the_next_start(tmp_path: Path) -> None:
    env = {"GREETING": "one"}
    proc = _python("import os; print(os.environ.get('GREETING'), os.environ.get('HOME'))", tmp_path, env=env)
    await proc.start()
    await proc.wait(30)
    env["GREETING"] = "two"
    await proc.start()
    await proc.wait(30)
    assert proc.log().splitlines() == ["one None", "two None"]


async def test_stop_ends_a_process_with_sigterm(tmp_path: Path) -> None:
    proc = _python("import time; print('ready', flush=True); time.sleep(60)", tmp_path)
    await proc.start()
    await _wait_for_line(proc, "ready")
    assert await proc.stop(30) == -signal.SIGTERM


async def test_stop_kills_a_process_that_outlives_its_sigterm(tmp_path: Path) -> None:
    proc = _python(STUBBORN, tmp_path)
    await proc.start()
    await _wait_for_line(proc, "ready")
    assert await proc.stop(0.2) == -signal.SIGKILL
    assert not proc.running


async def test_wait_raises_and_leaves_the_process_running_when_it_runs_out(tmp_path: Path) -> None:
    proc = _python(STUBBORN, tmp_path)
    await proc.start()
    await _wait_for_line(proc, "ready")
    with pytest.raises(TimeoutError):
        await proc.wait(0.05)
    assert proc.running
    await proc.kill()
    assert not proc.running
    await proc.kill()  # a second kill is nothing


async def test_signal_once_exited_is_nothing_and_before_a_start_an_error(tmp_path: Path) -> None:
    proc = _python("pass", tmp_path)
    with pytest.raises(RuntimeError, match="never started"):
        proc.signal(signal.SIGTERM)
    assert await proc.stop(1) == 0  # never started: nothing to stop
    await proc.start()
    assert await proc.wait(30) == 0
    proc.signal(signal.SIGTERM)
    assert await proc.wait(30) == 0


async def test_pipes_give_stdin_and_stdout_and_stderr_still_goes_to_the_log(tmp_path: Path) -> None:
    proc = _python("import sys; sys.stderr.write('to log\\n'); print(input().upper())", tmp_path)
    child = await proc.start(pipes=True)
    out, _ = await child.communicate(b"shout\n")
    assert out == b"SHOUT\n"
    assert proc.log() == "to log\n"


async def test_new_session_puts_the_child_in_its_own_session(tmp_path: Path) -> None:
    code = "import os; print(os.getsid(0) == os.getpid())"
    alone = _python(code, tmp_path, new_session=True)
    await alone.start()
    await alone.wait(30)
    assert alone.log().splitlines() == ["True"]
    assert alone.pid is not None
