"""A private single-node SLURM cluster (munged + slurmctld + slurmd) for tests and local sweeps.

Everything lives under one state directory: munge key and socket, ``slurm.conf`` (all paths
absolute, loopback only, no cgroups, no accounting), daemon logs and PID files. Ports are picked
free at the first start, so several clusters (say, two test sessions) can run side by side on one
machine.

Controller state is kept across restarts of the same directory: :func:`start` (and ``start`` on
the command line) starts again only a daemon that died (slurmctld, slurmd or both: the queue and the
running jobs carry on), recovers the jobs and the job-id counter from ``<dir>/ctld`` (``StateSaveLocation``)
and reuses the previous ports, so a controller that died, or a ``stop`` followed by ``start``, carries
on where it was (``stop`` cancels the jobs first: they are then listed as cancelled for
``MinJobAge``, and new jobs get new ids). ``start --fresh`` (``fresh=True``) wipes it instead: the
jobs are forgotten and job ids start again at 1. Both say which one happened.

Without accounting ``sacct`` fails, so submitit's ``job.state`` stays ``UNKNOWN``: results,
exceptions and checkpoint/requeue still work (submitit reads the result files), but every wait
on a job must be bounded (see :func:`benchmark.sweep.slurm_job.wait_all`).

CLI::

    python -m benchmark.tools.slurm_local install|start|stop|status|env [--dir DIR] [--fresh]
    eval "$(python -m benchmark.tools.slurm_local env)"   # then sinfo, sbatch, submitit work

Needs root (to install the Debian packages and to run slurmd). Otherwise, or when the packages
cannot be installed, :class:`SlurmUnavailable` is raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from benchmark.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text

APT_PACKAGES: tuple[str, ...] = ("slurmctld", "slurmd", "slurm-client", "munge")
"""Debian packages needed (``apt-get install --no-install-recommends ...``)."""

DEFAULT_STATE_DIR = Path("/tmp/plures-slurm")
"""State directory used by the CLI when ``--dir`` is not given (override: ``PLURES_SLURM_DIR``)."""

PARTITION = "debug"
"""Name of the cluster's only partition (the default one)."""

CLIENT_BINARIES: tuple[str, ...] = ("srun", "sbatch", "squeue", "scancel", "sinfo", "scontrol")
"""slurm-client's commands: submitit (and the tests) call them by name, so they must be on PATH."""

_DAEMON_BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd")  # on PATH or in _SBIN_DIRS
_SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
_MAX_UNIX_SOCKET_PATH = 107
_DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order (reverse of start order)


class SlurmUnavailable(RuntimeError):
    """Real SLURM cannot be used on this machine (not root, packages missing and not installable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SlurmStartError(RuntimeError):
    """The packages are there but the daemons did not come up; the message holds the log tails."""


@dataclasses.dataclass
class SlurmCluster:
    """A running private cluster.

    ``env`` holds the variables clients need (``SLURM_CONF``); merge it into ``os.environ``
    (or a subprocess's environment) before calling sinfo/sbatch/submitit.
    """

    state_dir: Path
    conf_path: Path
    env: dict[str, str]
    node_name: str = ""
    cpus: int = 0
    real_memory_mb: int = 0
    partition: str = PARTITION
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    recovered: bool = False
    """Whether this start recovered an earlier controller state (jobs, job ids) from ``<dir>/ctld``."""
    enforce_part_limits: str = "ALL"
    restarted: list[str] = dataclasses.field(default_factory=list)
    """The daemons the last :func:`start` started (all three, one or two of them after a death, none when all ran)."""

    def client_env(self) -> dict[str, str]:
        """``os.environ`` plus :attr:`env` (for ``subprocess.run(..., env=...)``)."""
        return {**os.environ, **self.env}

    def pid_file(self, daemon: str) -> Path:
        """PID file written by ``daemon`` (one of munged, slurmctld, slurmd)."""
        return _layout(self.state_dir)["run"] / f"{daemon}.pid"


# --------------------------------------------------------------------------- helpers


def _layout(state_dir: Path) -> dict[str, Path]:
    return {
        "munge": state_dir / "munge",
        "run": state_dir / "run",
        "log": state_dir / "log",
        "ctld": state_dir / "ctld",
        "spool": state_dir / "spool",
    }


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _bin(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SlurmUnavailable(f"executable {name!r} not found (install: {' '.join(APT_PACKAGES)})")
    return path


def missing_binaries() -> list[str]:
    """The binaries a cluster needs that this machine lacks: the daemons and munge's tools (on PATH
    or in the sbin directories) and :data:`CLIENT_BINARIES` (on PATH)."""
    return [b for b in _DAEMON_BINARIES if _which(b) is None] + [b for b in CLIENT_BINARIES if shutil.which(b) is None]


def install_command() -> str:
    """The command that installs what :func:`missing_binaries` lists (Debian, as root)."""
    return f"apt-get install --no-install-recommends {' '.join(APT_PACKAGES)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_available_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 2048


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(lines[-n:]) if lines else f"({path} is empty)"


def _logs_tail(state_dir: Path, n: int = 30) -> str:
    log = _layout(state_dir)["log"]
    parts = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log", "daemons.out"):
        parts.append(f"--- tail of {log / name} ---\n{_tail(log / name, n)}")
    return "\n".join(parts)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _proc_matches(pid: int, daemon: str, marker: str) -> bool:
    """True when ``pid`` is a live (non-zombie) ``daemon`` whose command line mentions ``marker``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    return (comm == daemon or Path(cmdline.split(" ", 1)[0]).name == daemon) and marker in cmdline


def _marker(state_dir: Path, daemon: str) -> str:
    lay = _layout(state_dir)
    return str(lay["munge"] / "munge.socket.2") if daemon == "munged" else str(state_dir / "slurm.conf")


def _live_pids(state_dir: Path) -> dict[str, int]:
    """PIDs from this state dir's pid files that still belong to our daemons."""
    out = {}
    for daemon in _DAEMONS:
        pid = _read_pid(_layout(state_dir)["run"] / f"{daemon}.pid")
        if pid is not None and _proc_matches(pid, daemon, _marker(state_dir, daemon)):
            out[daemon] = pid
    return out


def _run(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30.0, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command; daemons' output goes to ``log`` (never a pipe a forked daemon could hold open)."""
    if log is None:
        return subprocess.run(list(cmd), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    with open(log, "ab") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
        fh.flush()
        return subprocess.run(list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)


# --------------------------------------------------------------------------- install


def install_packages(*, timeout_s: float = 600.0) -> None:
    """Install the Debian packages if any binary is missing (needs root and apt-get).

    Raises :class:`SlurmUnavailable` when they are missing and cannot be installed.
    """
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"missing {missing} and not root (uid={os.geteuid()}) to install {list(APT_PACKAGES)}")
    apt = shutil.which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"missing {missing} and no apt-get to install {list(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
    try:
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:  # package lists may be stale or absent
            subprocess.run([apt, "update", "-q"], env=env, capture_output=True, text=True, timeout=timeout_s)
            r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise SlurmUnavailable(f"apt-get timed out after {timeout_s}s: {e.cmd}") from e
    if r.returncode != 0:
        raise SlurmUnavailable(f"apt-get install {' '.join(APT_PACKAGES)} failed (rc={r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    still = missing_binaries()
    if still:
        raise SlurmUnavailable(f"after installing {list(APT_PACKAGES)}, still missing {still}")


# --------------------------------------------------------------------------- config


def _slurm_conf(state_dir: Path, *, node: str, cpus: int, mem_mb: int, ctld_port: int, slurmd_port: int, enforce_part_limits: str = "ALL") -> str:
    lay = _layout(state_dir)
    sock = lay["munge"] / "munge.socket.2"
    def_mem = max(64, min(1024, mem_mb // max(cpus, 1)))
    lines = [
        "# Written by benchmark.tools.slurm_local: a private single-node cluster. Do not edit by hand.",
        "ClusterName=plures",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock},cred_expire=10",
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        f"StateSaveLocation={lay['ctld']}",
        f"SlurmdSpoolDir={lay['spool']}",
        f"SlurmctldPidFile={lay['run'] / 'slurmctld.pid'}",
        f"SlurmdPidFile={lay['run'] / 'slurmd.pid'}",
        f"SlurmctldLogFile={lay['log'] / 'slurmctld.log'}",
        f"SlurmdLogFile={lay['log'] / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobContainerType=job_container/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "KillWait=5",
        "MinJobAge=300",
        "InactiveLimit=0",
        f"EnforcePartLimits={enforce_part_limits}",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        f"DefMemPerCPU={def_mem}",
        f"TmpFS={state_dir}",
        f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]
    return "\n".join(lines)


def _prepare(state_dir: Path, fresh: bool) -> tuple[dict[str, Path], str, int, int]:
    lay = _layout(state_dir)
    sock = lay["munge"] / "munge.socket.2"
    if len(str(sock)) > _MAX_UNIX_SOCKET_PATH:
        raise SlurmStartError(f"state_dir={str(state_dir)!r} is too long: munge socket path {str(sock)!r} exceeds {_MAX_UNIX_SOCKET_PATH} chars")
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)
    for parent in state_dir.parents:  # munged checks every directory above its socket
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise SlurmStartError(
                f"state_dir={str(state_dir)!r}: its parent {str(parent)!r} (mode {mode & 0o777:o}) is not "
                "searchable by all, which munged requires for its socket; use a directory such as /tmp/..."
            )
    if fresh:  # forget the controller's jobs and job ids, and the node's
        for key in ("ctld", "spool"):
            shutil.rmtree(lay[key], ignore_errors=True)
    for p in lay.values():
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o755)  # munged refuses a socket dir that is not 0755
    for stale in list(lay["run"].glob("*.pid")) + [sock, Path(str(sock) + ".lock")]:
        stale.unlink(missing_ok=True)
    key = lay["munge"] / "munge.key"
    if not key.exists():
        atomic_write_bytes(key, secrets.token_bytes(1024))
    os.chmod(key, 0o400)
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    mem_mb = max(256, int(_mem_available_mb() * 0.8))
    return lay, node, cpus, mem_mb


# --------------------------------------------------------------------------- start / stop


def _wait_pid_file(state_dir: Path, daemon: str, deadline: float) -> int:
    path = _layout(state_dir)["run"] / f"{daemon}.pid"
    while time.monotonic() < deadline:
        pid = _read_pid(path)
        if pid is not None and _proc_matches(pid, daemon, _marker(state_dir, daemon)):
            return pid
        time.sleep(0.05)
    raise SlurmStartError(f"{daemon} did not write a live pid to {path}\n{_logs_tail(state_dir)}")


STATE_FILE = "job_state"
"""The controller's saved jobs in ``<dir>/ctld``: there, a start recovers them (and the job-id counter)."""


def _saved_state(state_dir: Path) -> bool:
    return (_layout(state_dir)["ctld"] / STATE_FILE).is_file()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _previous_ports(conf: Path) -> tuple[int, int] | None:
    """The controller and node ports of an earlier ``slurm.conf``, when both are free again (a
    recovered controller state names the node by them; running job steps report to them)."""
    try:
        text = conf.read_text()
    except OSError:
        return None
    ports = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("SlurmctldPort", "SlurmdPort") and value.strip().isdigit():
            ports[key] = int(value)
    if len(ports) != 2 or ports["SlurmctldPort"] == ports["SlurmdPort"] or not all(_port_free(p) for p in ports.values()):
        return None
    return ports["SlurmctldPort"], ports["SlurmdPort"]


def _node_state(cluster_env: dict[str, str], node: str) -> str:
    try:
        r = _run([_bin("sinfo"), "-h", "-N", "-n", node, "-o", "%T"], env=cluster_env, timeout=10)
    except subprocess.TimeoutExpired:
        return "(sinfo timed out)"
    return r.stdout.strip() if r.returncode == 0 else f"(sinfo rc={r.returncode}: {r.stderr.strip()})"


def start(state_dir: Path, *, timeout_s: float = 30.0, fresh: bool = False, enforce_part_limits: str = "ALL") -> SlurmCluster:
    """Install if needed, write the config, start munged, slurmctld, slurmd; wait for the node idle.

    A cluster already running from ``state_dir`` (with the same ``enforce_part_limits``) is returned
    as is (its node resumed if it was marked down or drained). When its controller or its node
    daemon died (or both), the dead one(s) alone are started again: the queue is kept and jobs
    running on the node carry on (``cluster.restarted`` names what was started). When munged died,
    the rest are stopped (their jobs cancelled) and all are started again. The controller recovers its
    saved state (jobs, job-id counter) from an earlier start in ``state_dir`` and the earlier ports are
    reused (``cluster.recovered`` says whether there was one); ``fresh=True`` wipes that state first.
    ``enforce_part_limits`` is slurm.conf's ``EnforcePartLimits`` (``ALL``: sbatch refuses a request
    no node of the partition can hold; ``NO``: such a job is accepted and stays pending).

    Raises :class:`SlurmUnavailable` (not root / no packages) or :class:`SlurmStartError` (daemons
    failed; whatever was started is stopped again).
    """
    state_dir = Path(state_dir).resolve()
    if enforce_part_limits not in ("ALL", "ANY", "NO"):
        raise ValueError(f"enforce_part_limits={enforce_part_limits!r}: expected ALL, ANY or NO")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"running slurmd needs root (uid={os.geteuid()})")
    install_packages()
    existing = _load(state_dir)
    live = _live_pids(state_dir)
    if existing is not None and not fresh and existing.enforce_part_limits == enforce_part_limits and "munged" in live:
        # the controller or the node daemon died (or neither): start the dead one(s) alone; queued and running jobs stay
        revived = _revive(existing, [d for d in ("slurmctld", "slurmd") if d not in live], timeout_s)
        if revived is not None:
            return revived
        live = _live_pids(state_dir)
    if existing is not None or live:
        _stop_dir(state_dir)

    conf = state_dir / "slurm.conf"
    ports = None if fresh else _previous_ports(conf)
    lay, node, cpus, mem_mb = _prepare(state_dir, fresh)
    recovered = _saved_state(state_dir)
    if ports is None:
        ctld_port = _free_port()
        slurmd_port = _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
    else:
        ctld_port, slurmd_port = ports
    atomic_write_text(conf, _slurm_conf(state_dir, node=node, cpus=cpus, mem_mb=mem_mb, ctld_port=ctld_port, slurmd_port=slurmd_port,
                                        enforce_part_limits=enforce_part_limits))
    os.chmod(conf, 0o644)
    sock = lay["munge"] / "munge.socket.2"
    env = {"SLURM_CONF": str(conf)}
    cluster = SlurmCluster(state_dir=state_dir, conf_path=conf, env=env, node_name=node, cpus=cpus, real_memory_mb=mem_mb, recovered=recovered,
                           enforce_part_limits=enforce_part_limits)
    denv = {**os.environ, **env}
    out = lay["log"] / "daemons.out"
    deadline = time.monotonic() + timeout_s
    try:
        r = _run(
            [
                _bin("munged"),
                f"--socket={sock}",
                f"--key-file={lay['munge'] / 'munge.key'}",
                f"--pid-file={lay['run'] / 'munged.pid'}",
                f"--log-file={lay['log'] / 'munged.log'}",
                f"--seed-file={lay['munge'] / 'munged.seed'}",
            ],
            env=denv,
            log=out,
            timeout=timeout_s,
        )
        if r.returncode != 0:
            raise SlurmStartError(f"munged exited with rc={r.returncode}\n{_logs_tail(state_dir)}")
        _wait_pid_file(state_dir, "munged", deadline)
        cred = _run([_bin("munge"), "-S", str(sock), "-n"], timeout=10)
        check = subprocess.run([_bin("unmunge"), "-S", str(sock)], input=cred.stdout, capture_output=True, text=True, timeout=10)
        if cred.returncode != 0 or check.returncode != 0:
            raise SlurmStartError(f"munge self-test failed on {sock}: {cred.stderr}{check.stderr}\n{_logs_tail(state_dir)}")
        # -c: clear the saved state; without it slurmctld recovers jobs and the job-id counter from StateSaveLocation
        for daemon, extra in (("slurmctld", ["-c"] if not recovered else []), ("slurmd", ["-N", node])):
            r = _run([_bin(daemon), "-f", str(conf), *extra], env=denv, log=out, timeout=timeout_s)
            if r.returncode != 0:
                raise SlurmStartError(f"{daemon} exited with rc={r.returncode}\n{_logs_tail(state_dir)}")
            _wait_pid_file(state_dir, daemon, deadline)
        state = ""
        while time.monotonic() < deadline:
            state = _node_state(denv, node)
            if state == "idle":
                break
            time.sleep(0.1)
        else:
            raise SlurmStartError(f"node {node!r} not idle after {timeout_s}s (sinfo state: {state!r})\n{_logs_tail(state_dir)}")
    except BaseException:
        _stop_dir(state_dir)
        raise
    cluster.pids = _live_pids(state_dir)
    cluster.restarted = list(reversed(_DAEMONS))
    _save(cluster)
    return cluster


def _save(cluster: SlurmCluster) -> None:
    atomic_write_json(cluster.state_dir / "cluster.json", {**dataclasses.asdict(cluster), "state_dir": str(cluster.state_dir),
                                                           "conf_path": str(cluster.conf_path)})


USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")
"""sinfo states of a node that runs jobs (a trailing ``*``, not responding, is not one of them)."""


def _revive(cluster: SlurmCluster, dead: list[str], timeout_s: float) -> SlurmCluster | None:
    """Start the ``dead`` daemons (``slurmctld``, ``slurmd``) alone again, munged still running: the
    controller recovers its saved state, slurmd takes up the job steps still running on the node, so
    that the queue and the running jobs carry on. A node marked down or drained is resumed. None when
    that did not bring the node back (the caller then starts everything anew)."""
    state_dir = cluster.state_dir
    if not cluster.conf_path.is_file():
        return None
    recovered = cluster.recovered
    out = _layout(state_dir)["log"] / "daemons.out"
    deadline = time.monotonic() + timeout_s
    for daemon in ("slurmctld", "slurmd"):
        if daemon not in dead:
            continue
        _layout(state_dir)["run"].joinpath(f"{daemon}.pid").unlink(missing_ok=True)
        if daemon == "slurmctld":
            recovered = _saved_state(state_dir)
            extra = [] if recovered else ["-c"]
        else:
            extra = ["-N", cluster.node_name]
        r = _run([_bin(daemon), "-f", str(cluster.conf_path), *extra], env=cluster.client_env(), log=out, timeout=timeout_s)
        if r.returncode != 0:
            return None
        try:
            _wait_pid_file(state_dir, daemon, deadline)
        except SlurmStartError:
            return None
    resumed = False
    while time.monotonic() < deadline:
        state = _node_state(cluster.client_env(), cluster.node_name)
        if state in USABLE_NODE_STATES:
            cluster = dataclasses.replace(cluster, pids=_live_pids(state_dir), recovered=recovered, restarted=list(dead))
            _save(cluster)
            return cluster
        if not resumed and state.startswith(("down", "drain")) and not state.endswith("*"):  # marked so, its slurmd answering
            _run([_bin("scontrol"), "update", f"nodename={cluster.node_name}", "state=resume"], env=cluster.client_env(), timeout=10)
            resumed = True
        time.sleep(0.1)
    return None


def _load(state_dir: Path) -> SlurmCluster | None:
    path = Path(state_dir) / "cluster.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    d["state_dir"] = Path(d["state_dir"])
    d["conf_path"] = Path(d["conf_path"])
    return SlurmCluster(**d)


def load(state_dir: Path) -> SlurmCluster:
    """The cluster last started from ``state_dir`` (it may since have stopped: see :func:`status`)."""
    cluster = _load(Path(state_dir).resolve())
    if cluster is None:
        raise FileNotFoundError(f"no cluster.json under state_dir={str(state_dir)!r}: start one first")
    return cluster


def _cancel_jobs(state_dir: Path, timeout_s: float) -> None:
    """Cancel this cluster's jobs and wait (bounded) for the queue to drain, so no job outlives slurmd."""
    conf = state_dir / "slurm.conf"
    live = _live_pids(state_dir)
    if "slurmctld" not in live or not conf.exists() or _which("squeue") is None:
        return
    env = {**os.environ, "SLURM_CONF": str(conf)}
    deadline = time.monotonic() + timeout_s
    try:
        q = _run([_bin("squeue"), "-h", "-o", "%A"], env=env, timeout=10)
        ids = q.stdout.split()
        if q.returncode != 0 or not ids:
            return
        _run([_bin("scancel"), *ids], env=env, timeout=10)
        while time.monotonic() < deadline:
            q = _run([_bin("squeue"), "-h", "-o", "%A"], env=env, timeout=10)
            if q.returncode != 0 or not q.stdout.split():
                return
            time.sleep(0.2)
    except subprocess.TimeoutExpired:
        return


def _stop_dir(state_dir: Path, *, cancel_timeout_s: float = 15.0, kill_timeout_s: float = 10.0) -> list[int]:
    _cancel_jobs(state_dir, cancel_timeout_s)
    stopped = []
    for daemon in _DAEMONS:
        pid_file = _layout(state_dir)["run"] / f"{daemon}.pid"
        pid = _read_pid(pid_file)
        marker = _marker(state_dir, daemon)
        if pid is None or not _proc_matches(pid, daemon, marker):
            pid_file.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + kill_timeout_s
        while time.monotonic() < deadline and _proc_matches(pid, daemon, marker):
            time.sleep(0.05)
        if _proc_matches(pid, daemon, marker):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        pid_file.unlink(missing_ok=True)
        stopped.append(pid)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return stopped


def stop(cluster: SlurmCluster | Path) -> list[int]:
    """Cancel the cluster's jobs, then stop exactly the daemons whose PID files it wrote.

    A PID is signalled only if it is still the same daemon started from this state dir (command
    name and config/socket path checked), never anything else. Returns the PIDs stopped.
    """
    state_dir = cluster.state_dir if isinstance(cluster, SlurmCluster) else Path(cluster)
    return _stop_dir(Path(state_dir).resolve())


def status(state_dir: Path) -> dict[str, object]:
    """Live daemon PIDs and the node state (``"down"`` when not running)."""
    state_dir = Path(state_dir).resolve()
    live = _live_pids(state_dir)
    cluster = _load(state_dir)
    node_state = "down"
    if cluster is not None and "slurmctld" in live:
        node_state = _node_state(cluster.client_env(), cluster.node_name)
    return {"state_dir": str(state_dir), "pids": live, "node_state": node_state, "running": set(live) == set(_DAEMONS) and node_state not in ("down",)}


def state_message(cluster: SlurmCluster, fresh: bool = False) -> str:
    """One line: what the start did (nothing, one or two daemons started again with the queue kept,
    or all of them) and whether the controller carried on from its saved state or started afresh."""
    if not cluster.restarted:
        return "already running: nothing was started; the queue is as it was"
    parts = []
    if set(cluster.restarted) < set(_DAEMONS):
        parts.append(f"restarted {' and '.join(cluster.restarted)} alone (the other daemons were running): queued and running jobs kept")
    if "slurmctld" in cluster.restarted:
        ctld = _layout(cluster.state_dir)["ctld"]
        if cluster.recovered:
            parts.append(f"controller state recovered from {ctld}: earlier jobs are known and job ids continue (start --fresh to reset)")
        else:
            why = "--fresh: earlier jobs forgotten" if fresh else "no saved state"
            parts.append(f"fresh controller state in {ctld} ({why}); job ids start at 1")
    return "; ".join(parts)


def env_lines(cluster: SlurmCluster) -> str:
    """Shell ``export`` lines for the cluster's client environment."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(cluster.env.items()))


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.tools.slurm_local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("PLURES_SLURM_DIR", DEFAULT_STATE_DIR)), help="state directory (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="start: wipe the controller's saved state (jobs, job ids restart at 1) instead of recovering it")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install_packages()
            print("slurm packages present")
        elif args.command == "start":
            t0 = time.monotonic()
            cluster = start(args.dir, fresh=args.fresh)
            print(f"slurm cluster up in {time.monotonic() - t0:.2f}s: node {cluster.node_name} ({cluster.cpus} CPUs, {cluster.real_memory_mb} MB), pids {cluster.pids}", file=sys.stderr)
            print(state_message(cluster, args.fresh), file=sys.stderr)
            print(env_lines(cluster), end="")
        elif args.command == "stop":
            pids = stop(args.dir)
            print(f"stopped pids {pids}" if pids else "nothing was running", file=sys.stderr)
        elif args.command == "status":
            st = status(args.dir)
            print(json.dumps(st, indent=2))
            return 0 if st["running"] else 1
        elif args.command == "env":
            print(env_lines(load(args.dir)), end="")
    except SlurmUnavailable as e:
        print(f"real SLURM unavailable: {e.reason}", file=sys.stderr)
        return 2
    except (SlurmStartError, FileNotFoundError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
