"""The Kubernetes test binaries: where they are, which are missing, building them.

They come from ``tests/k8s/build-tools.sh`` (cached in ``.cache/k8s-tools/bin``, or
``$CALLBOARD_K8S_TOOLS_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.paths import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "tests" / "k8s" / "build-tools.sh"
DEFAULT_TOOLS_DIR = REPO_ROOT / ".cache" / "k8s-tools" / "bin"

#: Binaries the local control plane needs (all built by tests/k8s/build-tools.sh).
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


Log = Callable[[str], None]


def print_log(line: str) -> None:
    """The default progress log: a line on stderr."""
    print(line, file=sys.stderr, flush=True)


class ToolsError(RuntimeError):
    """The control-plane binaries are missing and could not be built."""


def tools_dir() -> Path:
    """Folder with the binaries: ``$CALLBOARD_K8S_TOOLS_DIR`` or ``.cache/k8s-tools/bin``."""
    override = os.environ.get("CALLBOARD_K8S_TOOLS_DIR")
    return Path(override).resolve() if override else DEFAULT_TOOLS_DIR


def missing_tools(directory: Path | None = None) -> list[str]:
    directory = directory or tools_dir()
    missing = [t for t in TOOLS if not os.access(directory / t, os.X_OK)]
    if not (directory / "kwok-stages" / ".version").is_file():
        missing.append("kwok-stages/")
    return missing


def run_build(argv: list[str], log: Log, *, show: Callable[[str], bool]) -> tuple[int, list[str]]:
    """Run a build script from the repo root, passing the lines ``show`` picks on to ``log``.

    Returns the exit code and the last 40 lines, for the error a failed build raises: the
    progress lines alone rarely say why it failed.
    """
    tail: list[str] = []
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-39:], line]
            if show(line):
                log(line)
    return proc.returncode, tail


def ensure_tools(log: Log = print_log) -> Path:
    """Run the (idempotent) build script; stream its progress lines to ``log``.

    When everything is built at the pinned versions the script only checks versions
    (about a second). Raises :class:`ToolsError` with the build's tail on failure.
    """
    directory = tools_dir()
    if not BUILD_SCRIPT.is_file():
        raise ToolsError(f"{BUILD_SCRIPT} is missing")
    missing = missing_tools(directory)
    if missing:
        log(f"[k8s-tools] missing in {directory}: {', '.join(missing)}; building them now")
    code, tail = run_build(
        ["bash", str(BUILD_SCRIPT)], log, show=lambda line: bool(missing) or line.startswith("[k8s-tools]")
    )
    if code != 0:
        raise ToolsError(
            f"building the Kubernetes test tools failed (exit {code}).\n"
            + "\n".join(tail)
            + "\n\nGet the tools with `make k8s-tools` (tests/k8s/build-tools.sh; needs Go"
            " >= 1.26 and the Go module proxy), or point KUBECONFIG to an existing cluster."
        )
    still_missing = missing_tools(directory)
    if still_missing:
        raise ToolsError(
            f"tests/k8s/build-tools.sh succeeded but {', '.join(still_missing)} are missing"
            f" in {directory}; run `make k8s-tools`."
        )
    return directory
