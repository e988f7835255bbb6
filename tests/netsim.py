"""Several hosts on one machine: network namespaces on a bridge, each with a CPU cgroup.

A :class:`Network` is a Linux bridge in the root namespace holding the
``.1`` address of a private /24; each :class:`Host` is a network namespace
joined to it by a veth pair (``eth0`` inside, with the next address), a
loopback that is up, and a CPU cgroup (optionally capped, e.g. half a core).
The test process reaches every host over the bridge, and hosts reach each
other, so a service bound to a host's address is what another host connects
to, as across machines. Every port is free inside a fresh namespace.

:meth:`Host.popen` runs a command inside the host: a small ``sh`` moves
itself into the host's cgroup and then execs ``ip netns exec`` and
``unshare --uts`` (the host's name as hostname, so ``socket.gethostname()``
names the host), so the command and everything it forks are inside before
the first instruction of the command runs; its pid is the one ``popen``
returns. :meth:`Host.kill` SIGKILLs every process of the host (the
cgroup's members): a host that dies. :meth:`Host.cut` drops every packet the
host sends or receives on its link (``iptables`` inside its namespace), a
network partition, until :meth:`Host.heal`; its processes run on and its
connections stay open, unanswered, as when a switch or a route fails.

Clean-up always happens: :meth:`Network.close` (a context manager, and an
``atexit`` hook for a process that forgets) kills the hosts' processes and
removes the namespaces (which takes their veths), the bridge and the cgroups;
a failure half-way through building a host is cleaned the same way. Every
name carries the network's tag, and a file in a state directory records the
tag's owner pid: a new :class:`Network` first sweeps what an owner that died
without cleaning (SIGKILL) left behind.

cgroup v1 (``cpu.cfs_quota_us``/``cpu.cfs_period_us``) or v2 (``cpu.max``),
whichever has the cpu controller. Needs root, ``ip`` (iproute2) and ``sh``;
:func:`available` says why not (and, with ``partitions=True``, whether
``iptables`` can filter inside a namespace). Standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

PREFIX = "imgsim"
STATE_DIRS = (Path("/run/imgstream-netsim"), Path("/tmp/imgstream-netsim"))
CFS_PERIOD_US = 100_000
SHARES_FACTOR = 16  # a host's CPU weight, in default weights (see CpuCgroup)
# Moves the shell into the cgroup ($1), then becomes the command: nothing escapes the cgroup.
_ENTER = 'echo $$ > "$1" && shift && exec "$@"'
# Inside a new UTS namespace: the host's name ($1) as hostname, then the command.
_NAME = 'hostname "$1" && shift && exec "$@"'
#: The rules of a cut link: every packet in and out of the host's eth0 is dropped
#: (the loopback stays up: a host's processes still reach each other).
_CUT_RULES = (("INPUT", "-i"), ("OUTPUT", "-o"))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


# -- CPU cgroups ------------------------------------------------------------------------------


def _cpu_hierarchy() -> tuple[Path, int] | None:
    """(the directory new cgroups go under, cgroup version) for the cpu controller, or None."""
    own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().split())
    mounts = []  # (type, mount point, super options)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts.append((fields[sep + 1], Path(fields[4]), fields[sep + 3].split(",")))
    for fstype, point, options in mounts:  # v1 first: where both exist, v1 holds cpu
        if fstype == "cgroup" and "cpu" in options:
            path = next((p for k, p in own.items() if "cpu" in k.split(",")), "/")
            return point / path.lstrip("/"), 1
    for fstype, point, _ in mounts:
        if fstype == "cgroup2" and "cpu" in (point / "cgroup.controllers").read_text().split():
            return point, 2
    return None


class CpuCgroup:
    """One cgroup of the cpu controller, optionally capped at ``cores`` CPUs."""

    def __init__(self, parent: Path, version: int, name: str, cores: float | None) -> None:
        self.path = parent / name
        self.version = version
        self.cores = cores
        if version == 2:  # children of the v2 root may only use controllers it hands down
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+cpu")
        self.path.mkdir()
        # A host owns its CPUs: on a busy machine, a cgroup of default weight is one
        # scheduling entity against every other runnable task, and would get far less
        # than its cap. A high weight lets it have its cap (the quota still bounds it).
        if version == 1:
            (self.path / "cpu.shares").write_text(str(1024 * SHARES_FACTOR))
        else:
            (self.path / "cpu.weight").write_text(str(100 * SHARES_FACTOR))
        if cores is not None:
            quota = max(1000, int(cores * CFS_PERIOD_US))
            if version == 1:
                (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")

    @property
    def procs_file(self) -> Path:
        """The file a process writes its pid to, to join."""
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        """The member processes (empty once removed)."""
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def stat(self) -> dict[str, int]:
        """``cpu.stat``: periods and throttled periods (``nr_periods``, ``nr_throttled``), ..."""
        lines = (self.path / "cpu.stat").read_text().splitlines()
        return {k: int(v) for k, v in (line.split() for line in lines if line.strip())}

    def remove(self, timeout_s: float = 10) -> None:
        """Kill what is left in it and remove it."""
        _remove_cgroup(self.path, timeout_s)


def _remove_cgroup(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while path.exists():
        with contextlib.suppress(OSError):
            _kill_all([int(p) for p in (path / "cgroup.procs").read_text().split()])
        try:
            path.rmdir()
        except FileNotFoundError:
            return
        except OSError:  # EBUSY until the killed members have exited
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- availability ----------------------------------------------------------------------------


def available(partitions: bool = False) -> tuple[bool, str]:
    """Whether hosts can be simulated here: (True, "") or (False, the reason).

    ``partitions``: also whether :meth:`Host.cut` can work (``iptables`` on PATH,
    and able to add a rule inside a namespace).
    """
    if os.geteuid() != 0:
        return False, "network namespaces and cgroups need root"
    for tool in ("ip", "sh", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return False, f"no {tool!r} on PATH (iproute2)"
    if partitions and shutil.which("iptables") is None:
        return False, "no 'iptables' on PATH (Debian's package iptables; make iptables)"
    try:
        hierarchy = _cpu_hierarchy()
    except OSError as exc:
        return False, f"cannot read the cgroup mounts: {exc}"
    if hierarchy is None:
        return False, "no cgroup hierarchy with the cpu controller is mounted"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return False, f"cannot create a network namespace: {done.stderr.strip()}"
    try:
        if partitions:
            done = _iptables(probe, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT", check=False)
            if done.returncode != 0:
                return False, f"iptables cannot add a rule in a namespace: {done.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


def _iptables(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``iptables ARGS`` inside ``netns`` (``-w``: wait for the lock, not fail on it)."""
    argv = ["ip", "netns", "exec", netns, "iptables", "-w", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


# -- hosts and the network -------------------------------------------------------------------


class Host:
    """A network namespace with one address on the network, and a CPU cgroup."""

    def __init__(self, name: str, netns: str, address: str, cgroup: CpuCgroup) -> None:
        self.name = name
        self.netns = netns
        self.address = address
        self.cgroup = cgroup
        self.procs: list[subprocess.Popen[bytes]] = []
        #: Whether the host's link is cut (see :meth:`cut`).
        self.isolated = False

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host (its namespace and cgroup)."""
        enter = ["sh", "-c", _ENTER, PREFIX, str(self.cgroup.procs_file)]
        name = ["unshare", "--uts", "sh", "-c", _NAME, PREFIX, self.name]
        return [*enter, "ip", "netns", "exec", self.netns, *name, *argv]

    def popen(
        self,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the host, stdout and stderr appended to ``log``."""
        with open(log, "ab") as stream:
            proc = subprocess.Popen(
                self.command(argv),
                stdout=stream,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                cwd=cwd,
            )
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host to completion, output captured."""
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def pids(self) -> list[int]:
        """Every process running on the host."""
        return self.cgroup.pids()

    def kill(self, timeout_s: float = 10) -> int:
        """SIGKILL every process on the host (a host that dies); how many there were."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while pids := self.pids():
            killed.update(pids)
            _kill_all(pids)
            for proc in self.procs:  # reap our children, so none lingers as a zombie
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"host {self.name}: processes {pids} survive SIGKILL")
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        return len(killed)

    def cut(self) -> None:
        """Drop every packet to and from the rest of the network, both ways (a partition).

        Nothing is refused or reset: a peer's packets vanish, so connections
        stay open and time out as they would behind a failed switch. Lasts
        until :meth:`heal`.
        """
        if self.isolated:
            return
        for chain, side in _CUT_RULES:
            _iptables(self.netns, "-I", chain, side, "eth0", "-j", "DROP")
        self.isolated = True

    def heal(self) -> None:
        """Undo :meth:`cut`: the host's packets flow again."""
        if not self.isolated:
            return
        for chain, side in _CUT_RULES:
            _iptables(self.netns, "-D", chain, side, "eth0", "-j", "DROP")
        self.isolated = False

    def __repr__(self) -> str:
        cut = " cut" if self.isolated else ""
        return f"<Host {self.name} {self.address} netns={self.netns}{cut}>"


class Network:
    """A bridge on a private /24 and the hosts on it (see the module docstring)."""

    def __init__(self) -> None:
        self._state = _state_dir()
        _sweep(self._state)
        hierarchy = _cpu_hierarchy()
        if hierarchy is None:
            raise RuntimeError("no cgroup hierarchy with the cpu controller is mounted")
        self._cg_parent, self._cg_version = hierarchy
        self.tag = secrets.token_hex(3)
        (self._state / self.tag).write_text(str(os.getpid()))
        self.hosts: dict[str, Host] = {}
        self._netns: list[str] = []
        self._cgroups: list[CpuCgroup] = []
        self._closed = False
        self.bridge = f"isb-{self.tag}"
        atexit.register(self.close)
        try:
            self.subnet = _free_subnet()
            self.gateway = str(self.subnet.network_address + 1)
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str, cores: float | None = None) -> Host:
        """A new host called ``name`` (letters, digits, ``-``), capped at ``cores`` CPUs."""
        if self._closed:
            raise RuntimeError("the network is closed")
        if name in self.hosts or not name.replace("-", "").isalnum() or len(name) > 20:
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = len(self._netns)
        netns = f"{PREFIX}-{self.tag}-{name}"
        outside, inside = f"isv-{self.tag}-{index}", f"isp-{self.tag}-{index}"
        address = str(self.subnet.network_address + 2 + index)
        try:
            _ip("netns", "add", netns)
            self._netns.append(netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", netns)  # deleting the netns deletes the pair
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", netns, "link", "set", inside, "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            cgroup = CpuCgroup(
                self._cg_parent, self._cg_version, f"{PREFIX}-{self.tag}-{name}", cores
            )
            self._cgroups.append(cgroup)
        except BaseException:
            _ip("link", "del", outside, check=False)  # if it never reached the namespace
            raise
        host = Host(name, netns, address, cgroup)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Kill every host's processes; remove the cgroups, namespaces (veths) and bridge."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for host in self.hosts.values():
            try:
                host.kill()
            except RuntimeError as exc:
                errors.append(str(exc))
        for cgroup in self._cgroups:
            try:
                cgroup.remove()
            except OSError as exc:
                errors.append(f"cgroup {cgroup.path}: {exc}")
        for netns in self._netns:
            _remove_netns(netns)
        _ip("link", "del", self.bridge, check=False)
        with contextlib.suppress(FileNotFoundError):
            (self._state / self.tag).unlink()
        atexit.unregister(self.close)
        if errors:
            raise RuntimeError("netsim clean-up: " + "; ".join(errors))

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _remove_netns(netns: str) -> None:
    """Kill what still runs in the namespace (outside any cgroup we know), then delete it."""
    done = _ip("netns", "pids", netns, check=False)
    _kill_all([int(p) for p in done.stdout.split()])
    _ip("netns", "del", netns, check=False)


def _state_dir() -> Path:
    for directory in STATE_DIRS:
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            return directory
    raise RuntimeError(f"no writable state directory among {[str(d) for d in STATE_DIRS]}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.233.0.0/16 that no interface or route here overlaps."""
    used: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        with contextlib.suppress(ValueError, IndexError):  # "default", "local ...", blank
            used.append(ipaddress.IPv4Network(line.split()[0]))
    for line in _ip("-4", "-o", "addr").stdout.splitlines():
        used.append(ipaddress.IPv4Interface(line.split()[3]).network)  # "N: dev inet ADDR/LEN"
    candidates = list(ipaddress.IPv4Network("10.233.0.0/16").subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise RuntimeError("no free /24 in 10.233.0.0/16")


def _sweep(state: Path) -> None:
    """Remove what networks whose owner process died left behind."""
    hierarchy = _cpu_hierarchy()
    for entry in state.iterdir():
        with contextlib.suppress(ValueError, OSError):
            if _alive(int(entry.read_text())):
                continue
        tag = entry.name
        for line in _ip("netns", "list", check=False).stdout.splitlines():
            netns = line.split()[0] if line.split() else ""
            if netns.startswith(f"{PREFIX}-{tag}-"):
                _remove_netns(netns)
        if hierarchy is not None:
            for cg in hierarchy[0].glob(f"{PREFIX}-{tag}-*"):
                with contextlib.suppress(OSError):
                    _remove_cgroup(cg, 5)
        _ip("link", "del", f"isb-{tag}", check=False)
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
