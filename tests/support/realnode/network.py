"""Host networking of the real node: sysctls, blackhole routes, a forward guard, and cleanup.

Everything here is host-wide (one real node per machine at a time, see ``lock``). Each
change is recorded as it is made, so :meth:`HostNetwork.restore` undoes exactly what this
run did, also after a failure half-way: sysctls back to their old values, our routes and
rules deleted, the CNI bridge removed, and every iptables chain kube-proxy, the kubelet or
the CNI plugins added (``KUBE-*``, ``CNI-*``) flushed and deleted with the jumps to it.

Nothing may leave the machine: pod and service addresses are blackholed (the bridge's own
route is more specific and wins), and packets forwarded from the pod range out of any other
interface than the bridge are dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Marks our own iptables rules (so cleanup finds them even after a crash).
RULE_COMMENT = "callboard-realnode"
#: Chain prefixes that kube-proxy, the kubelet and the CNI plugins create.
OWNED_CHAIN = re.compile(r"^(KUBE-|CNI-)")
LOCK_PATH = Path("/run/callboard-realnode.lock")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def lock(log: Callable[[str], None]) -> Iterator[None]:
    """One real node per machine: fixed kubelet ports, one bridge, host-wide rules."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[realnode] another real node runs on this machine ({LOCK_PATH}); waiting ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def node_ip() -> str:
    """The machine's own global IPv4 address (pods reach the API server there)."""
    out = run("ip", "-4", "-o", "addr", "show", "scope", "global").stdout
    for line in out.splitlines():
        m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and " cb" not in line:
            return m.group(1)
    raise RuntimeError("no global IPv4 address on this machine: the pods could not reach the API server")


@dataclass
class HostNetwork:
    """The host-wide changes of one run, undone in reverse order by :meth:`restore`."""

    pod_cidr: str
    service_cidr: str
    bridge: str
    log: Callable[[str], None]
    _sysctls: dict[str, str] = field(default_factory=dict)
    _routes: list[str] = field(default_factory=list)
    _undo: list[list[str]] = field(default_factory=list)

    def setup(self) -> None:
        self.clean_leftovers()
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            run("modprobe", "br_netfilter")
        self._sysctl("net.ipv4.ip_forward", "1")
        self._sysctl("net.bridge.bridge-nf-call-iptables", "1")
        for cidr in (self.pod_cidr, self.service_cidr):
            run("ip", "route", "replace", "blackhole", cidr)
            self._routes.append(cidr)
        # Pods talk to each other, to services and to this machine; never beyond it.
        guard = ["FORWARD", "-s", self.pod_cidr, "!", "-o", self.bridge, "-m", "comment"]
        guard += ["--comment", RULE_COMMENT, "-j", "DROP"]
        run("iptables", "-I", *guard)
        self._undo.append(["iptables", "-D", *guard])

    def _sysctl(self, name: str, value: str) -> None:
        path = Path("/proc/sys") / name.replace(".", "/")
        if not path.exists():
            raise RuntimeError(f"sysctl {name} does not exist (kernel module missing?)")
        old = path.read_text().strip()
        if name not in self._sysctls:
            self._sysctls[name] = old
        path.write_text(value)

    def restore(self) -> None:
        """Undo everything (errors are logged, never raised: cleanup must go on)."""
        for argv in reversed(self._undo):
            run(*argv, check=False)
        self._undo.clear()
        for cidr in self._routes:
            run("ip", "route", "del", "blackhole", cidr, check=False)
        self._routes.clear()
        self.clean_leftovers()
        for name, old in self._sysctls.items():
            try:
                (Path("/proc/sys") / name.replace(".", "/")).write_text(old)
            except OSError as err:
                self.log(f"[realnode] could not restore sysctl {name}={old}: {err}")
        self._sysctls.clear()

    def clean_leftovers(self) -> None:
        """Remove the bridge and every owned iptables chain/rule (also a crashed run's)."""
        if Path(f"/sys/class/net/{self.bridge}").exists():
            run("ip", "link", "del", self.bridge, check=False)
        for cmd in ("iptables", "ip6tables"):
            for table in ("filter", "nat", "mangle"):
                self._clean_table(cmd, table)

    def _clean_table(self, cmd: str, table: str) -> None:
        saved = run(f"{cmd}-save", "-t", table, check=False)
        if saved.returncode != 0:
            return
        owned: list[str] = []
        for line in saved.stdout.splitlines():
            if line.startswith(":"):
                chain = line[1:].split()[0]
                if OWNED_CHAIN.match(chain):
                    owned.append(chain)
            elif line.startswith("-A "):
                parts = line.split()
                chain = parts[1]
                if OWNED_CHAIN.match(chain):
                    continue  # goes with the chain's flush
                target = parts[parts.index("-j") + 1] if "-j" in parts else ""
                if OWNED_CHAIN.match(target) or RULE_COMMENT in line:
                    # iptables-save quotes comments; -D takes the same words unquoted.
                    spec = [p.strip('"') for p in _split_rule(line[3:])]
                    run(cmd, "-t", table, "-D", *spec, check=False)
        for chain in owned:
            run(cmd, "-t", table, "-F", chain, check=False)
        for chain in owned:
            run(cmd, "-t", table, "-X", chain, check=False)


def _split_rule(text: str) -> list[str]:
    """Split an iptables-save rule into words, keeping "quoted strings" together."""
    words: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', text):
        words.append(m.group(1) if m.group(1) is not None else m.group(2))
    return words


def unmount_under(root: Path, log: Callable[[str], None]) -> None:
    """Unmount every mount point below ``root`` (deepest first; lazily if busy)."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        if run("umount", point, check=False).returncode != 0:
            res = run("umount", "-l", point, check=False)
            if res.returncode != 0:
                log(f"[realnode] could not unmount {point}: {res.stderr.strip()}")


def kill_cgroup_processes(name: str) -> int:
    """SIGKILL every process in the kubelet's pod cgroups: the containers of this node.

    Killing the containerd shims is not enough: their containers are re-parented and live
    on. The ``kubepods`` tree holds exactly the pods' processes (and nothing else: the
    kubelet creates it), so its ``cgroup.procs`` files are the list to end.
    """
    base = Path("/sys/fs/cgroup")
    pids: set[int] = set()
    for controller in base.iterdir() if base.is_dir() else []:
        top = controller / name
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)
    return len(pids)


def remove_cgroups(name: str) -> None:
    """Remove the kubelet's pod cgroups (cgroup v1: one tree per controller), leaves first."""
    base = Path("/sys/fs/cgroup")
    for controller in base.iterdir() if base.is_dir() else []:
        top = controller / name
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                os.rmdir(d)
