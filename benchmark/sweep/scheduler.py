"""What the SLURM controller says about a sweep's jobs: each job's state, pending reason, request
and comment (``squeue``), the size of the nodes of each partition (``sinfo``), and whether a pending
job can ever start. A controller that cannot be reached raises :class:`ControllerUnreachable`
(never "no jobs": that would read as "nothing in flight").

Jobs are matched to a sweep's manifest by id *and* by the launch token each submission puts in the
job's comment (``plures-sweep:<token>``): after a controller reset (``slurm_local start --fresh``,
lost state), job ids start again and an id in the manifest may belong to someone else's job.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

SQUEUE_FIELDS = ("%i", "%t", "%r", "%c", "%m", "%D", "%P", "%b", "%k")
"""squeue's fields, in order: job id (``123_4`` with ``-r``), compact state, reason, CPUs per node,
memory, node count, partition, TRES per node (GPUs), comment (last: it may hold anything)."""
SQUEUE_FORMAT = "|".join(SQUEUE_FIELDS)
SINFO_FORMAT = "%N|%P|%c|%m|%G"

PENDING_CODES = ("PD", "RQ", "RS", "RH", "RD", "RF")
"""Compact states of a job waiting to start (pending, requeued, resizing, held, ...); the others squeue lists run."""

TOKEN_PREFIX = "plures-sweep:"

REASONS: dict[str, str] = {
    "None": "",
    "Resources": "waiting for free CPUs, memory or GPUs",
    "Priority": "other jobs go first",
    "Dependency": "waiting for the jobs it depends on to finish",
    "JobArrayTaskLimit": "the array's limit on tasks running at once (array_parallelism)",
    "BeginTime": "its start time has not come",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "JobHeldUser": "held by its user (scontrol release ID)",
    "JobHeldAdmin": "held by an administrator",
    "NodeDown": "a node it needs is down",
    "launch failed requeued held": "its launch failed; requeued and held (scontrol release ID)",
    "QOSMaxJobsPerUserLimit": "the QOS's limit on running jobs per user",
    "AssocGrpCpuLimit": "the account's CPU limit",
    "AssocGrpGRES": "the account's GPU limit",
}
"""What common pending reasons mean (squeue's ``%r``); others are shown as SLURM spells them."""

NEVER_REASONS: dict[str, str] = {
    "PartitionConfig": "it asks more than the partition allows (CPUs, memory or GPUs per node)",
    "PartitionNodeLimit": "it asks more nodes than the partition allows",
    "PartitionTimeLimit": "its time limit exceeds the partition's",
    "BadConstraints": "no node has the features or resources it asks for",
    "DependencyNeverSatisfied": "a job it depends on ended in a way that can never satisfy the dependency",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
}
"""Pending reasons under which a job waits for ever unless someone changes it or the cluster."""


class ControllerUnreachable(RuntimeError):
    """squeue (or sinfo) could not reach the SLURM controller; the message is the command's own."""


@dataclass(frozen=True)
class QueuedJob:
    """One job (array task) as squeue lists it."""

    job_id: str
    state: str  # compact: PD, R, CG, ...
    reason: str
    cpus_per_node: int
    mem_mb: int | None
    nodes: int
    partition: str
    gpus_per_node: int
    comment: str

    @property
    def pending(self) -> bool:
        return self.state in PENDING_CODES

    def launched_by(self, token: str | None) -> bool:
        """Whether this job carries ``token`` (a manifest entry without one, from before tokens, matches any job)."""
        return token is None or f"{TOKEN_PREFIX}{token}" in self.comment


@dataclass(frozen=True)
class NodeSize:
    """The largest node of a partition (each quantity on its own: a job needs them on one node)."""

    cpus: int
    mem_mb: int
    gpus: int


def parse_memory_mb(text: str) -> int | None:
    """squeue's memory (``500M``, ``1G``, ``2T``, ``4096``: megabytes) in MB; None when absent."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)B?\s*", text or "", re.I)
    if not m:
        return None
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[m.group(2).upper()]
    return int(round(float(m.group(1)) * scale))


def parse_gpus(text: str) -> int:
    """GPUs in a TRES or GRES string (``gres:gpu:2``, ``gres/gpu:a100:4``, ``gpu:4(S:0-1)``, ``N/A``, ``(null)``)."""
    total = 0
    for item in (text or "").split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        parts = re.split(r"[:/]", item)
        if "gpu" in parts:
            after = parts[parts.index("gpu") + 1:]
            total += int(after[-1]) if after and after[-1].isdigit() else 1
    return total


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def parse_squeue(text: str) -> dict[str, QueuedJob]:
    """squeue's ``-h -r -o SQUEUE_FORMAT`` output -> job id -> :class:`QueuedJob`."""
    jobs = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(fields) != len(SQUEUE_FIELDS):
            continue
        jid, state, reason, cpus, mem, nodes, partition, tres, comment = (f.strip() for f in fields)
        jobs[jid] = QueuedJob(jid, state, reason, _int(cpus, 1), parse_memory_mb(mem), _int(nodes, 1), partition, parse_gpus(tres),
                              "" if comment == "(null)" else comment)
    return jobs


def parse_sinfo(text: str) -> dict[str, NodeSize]:
    """sinfo's ``-h -N -o SINFO_FORMAT`` output -> partition -> the largest CPUs, memory and GPUs of its nodes."""
    sizes: dict[str, NodeSize] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 5:
            continue
        _, partition, cpus, mem, gres = (f.strip() for f in fields)
        partition = partition.rstrip("*")  # the default partition
        old = sizes.get(partition, NodeSize(0, 0, 0))
        sizes[partition] = NodeSize(max(old.cpus, _int(cpus)), max(old.mem_mb, parse_memory_mb(mem) or 0), max(old.gpus, parse_gpus(gres)))
    return sizes


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ControllerUnreachable(f"{cmd[0]} did not answer within 60 s") from None
    except OSError as exc:
        raise ControllerUnreachable(f"{cmd[0]} cannot be run: {exc}") from None


def query_jobs(job_ids: Iterable[str]) -> dict[str, QueuedJob]:
    """The jobs among ``job_ids`` (array task ids ``123_4`` or whole jobs) that squeue lists, keyed
    by squeue's id (array tasks one by one). Raises :class:`ControllerUnreachable`."""
    ids = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not ids:
        return {}
    r = _run(["squeue", "-h", "-r", "-o", SQUEUE_FORMAT, "-j", ",".join(ids)])
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:  # none of them is known any more
            return {}
        raise ControllerUnreachable((r.stderr or r.stdout).strip() or f"squeue exited with {r.returncode}")
    return parse_squeue(r.stdout)


def node_sizes() -> dict[str, NodeSize] | None:
    """Partition -> its largest node (:func:`parse_sinfo`); None when sinfo fails (then nothing is judged by size)."""
    try:
        r = _run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT])
    except ControllerUnreachable:
        return None
    return parse_sinfo(r.stdout) if r.returncode == 0 else None


def never_starts(job: QueuedJob, sizes: dict[str, NodeSize] | None) -> str | None:
    """Why a pending ``job`` can never start as requested, or None: its request exceeds every node of
    its partition(s) (``sizes`` from :func:`node_sizes`), or SLURM's reason says so (:data:`NEVER_REASONS`)."""
    if not job.pending:
        return None
    parts = [p for p in job.partition.split(",") if p]
    known = [sizes[p] for p in parts if sizes and p in sizes]
    if known and len(known) == len(parts):
        cpus, mem, gpus = max(s.cpus for s in known), max(s.mem_mb for s in known), max(s.gpus for s in known)
        where = f"partition {job.partition}"
        if job.cpus_per_node > cpus:
            return f"it asks {job.cpus_per_node} CPUs per node; the largest node of {where} has {cpus}"
        if job.mem_mb is not None and mem and job.mem_mb > mem:
            return f"it asks {job.mem_mb} MB of memory per node; the largest node of {where} has {mem} MB"
        if job.gpus_per_node > gpus:
            return f"it asks {job.gpus_per_node} GPU(s) per node; the largest node of {where} has {gpus}"
    reason = job.reason.split(",")[0].strip("() ")
    if reason in NEVER_REASONS:
        return f"{NEVER_REASONS[reason]} (SLURM: {reason})"
    return None


def describe(job: QueuedJob, sizes: dict[str, NodeSize] | None = None) -> str:
    """A short note: the state and, for a pending job, SLURM's reason and what it means; a job that
    can never start says so first (``NEVER STARTS: ...``)."""
    if not job.pending:
        return {"R": "running", "CG": "completing", "CF": "configuring (nodes booting)", "S": "suspended"}.get(job.state, job.state)
    never = never_starts(job, sizes)
    reason = job.reason.strip("() ") or "None"
    if never:
        return f"NEVER STARTS as requested: {never}; cancel it (scancel {job.job_id.split('_')[0]}), change the request and relaunch"
    meaning = REASONS.get(reason, "")
    return f"queued: {reason}" + (f" ({meaning})" if meaning else "")
