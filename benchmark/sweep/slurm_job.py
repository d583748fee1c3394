"""submitit plumbing for sweeps: executors, preemption-safe calls, bounded waits.

Preemption / time-limit protocol (for training loops)
-----------------------------------------------------
Wrap the job function in :class:`CheckpointableCall`. The call carries no resume flag: the
function is called the same way on its first start and after every requeue (submitit's own after a
time limit or preemption signal, or the scheduler's after a node failure, a ``scontrol requeue`` or
a preemption whose grace period ended in SIGKILL), and decides from its own state on disk whether
it resumes (a checkpoint exists), has nothing left to do or starts. It saves a checkpoint at the
end of each epoch, and between steps polls :data:`STOP_REQUESTED`::

    from benchmark.sweep.slurm_job import STOP_REQUESTED, StopRequested  # the harness's StopRequested

    def train(cfg) -> dict:
        state = load_checkpoint(cfg) if has_checkpoint(cfg) else fresh_state(cfg)
        for epoch in range(state.epoch, cfg.epochs):
            for batch in loader:
                step(state, batch)
                if STOP_REQUESTED.is_set():      # SLURM is preempting us / time is nearly up
                    save_checkpoint(state)       # mid-epoch save, consistent (between steps)
                    raise StopRequested(STOP_REQUESTED.reason)
            save_checkpoint(state)
        return metrics(state)

What happens on a signal inside a running :class:`CheckpointableCall` under submitit:

* the requeue signal (``SIGUSR2``, submitit's default; SLURM sends it ``signal_delay_s`` before the
  time limit, and ``job._interrupt()`` sends it) sets ``STOP_REQUESTED`` (``reason="requeue"``)
  and returns: the loop keeps running until it polls the flag;
* ``SIGTERM`` (SLURM's preemption / cancel / requeue signal) sets it with ``reason="terminate"``;
* when the function raises :class:`StopRequested`, the wrapper runs submitit's own handling:
  after a requeue signal, the same call is pickled again and the job requeued (``scontrol
  requeue``); after only ``SIGTERM`` (waiting ``term_wait_s`` for a requeue signal that
  ``_interrupt`` sends right after it), the process exits, so that SLURM's own requeue of a
  preempted job runs the call again (the same happens if the function raises
  :class:`StopRequested` with no signal received). A SIGKILL at any point (``KillWait`` over, a
  node failure) loses nothing either: the requeued call finds the last checkpoint on disk;
* if the function does not raise within ``grace_s`` seconds, a ``SIGALRM`` does the same handling
  at whatever point the function is (the requeued call resumes from the last checkpoint saved).

Signal handlers run in the main thread; ``STOP_REQUESTED`` is a plain flag (safe to set from a
handler, unlike ``threading.Event``), cheap to poll at every step. The wrapper uses ``SIGALRM``
while the function runs (``grace_s=None`` disables the fallback). Outside submitit (a direct call,
the debug executor) no handler is installed and :class:`StopRequested` simply propagates.
"""

from __future__ import annotations

import signal
import subprocess
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.job_environment import JobEnvironment, SignalHandler
from submitit.core.utils import UncompletedJobError

# One exception for every stop: the harness's ``StopRequested`` (raised by ``fit`` after its
# mid-epoch checkpoint) is the one :class:`CheckpointableCall` catches, so a run inside a job uses
# ``Environment(stop=STOP_REQUESTED)`` and needs nothing else. Re-exported from here.
from benchmark.core.runtime import StopFlag as _HarnessStopFlag
from benchmark.core.runtime import StopRequested

__all__ = ["CLUSTERS", "STOP_REQUESTED", "CheckpointableCall", "StopFlag", "StopRequested", "executor_parameters", "make_executor",
           "raise_if_stop_requested", "wait_all"]

CLUSTERS: tuple[str, ...] = ("slurm", "local", "debug")
"""Values accepted by :func:`make_executor`'s ``cluster``."""


# --------------------------------------------------------------------------- executors


def _check_positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r}: expected a positive int or None")


def executor_parameters(
    cluster: str,
    *,
    partition: str | None = None,
    time_min: int | None = None,
    gpus_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    constraint: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    array_parallelism: int | None = None,
    nodes: int = 1,
    tasks_per_node: int = 1,
    name: str | None = None,
    max_num_timeout: int | None = None,
    slurm_additional_parameters: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments of submitit's ``AutoExecutor`` for ``cluster`` in :data:`CLUSTERS`: (constructor
    keywords, ``update_parameters`` keywords), checked; needs no scheduler.

    Only arguments that are not None are passed on. Generic ones (``time_min`` → ``timeout_min``,
    ``mem_gb``, ``cpus_per_task``, ``gpus_per_node``, ``nodes``, ``tasks_per_node``, ``name``)
    apply to every cluster; SLURM-only ones (``partition``, ``constraint``, ``account``, ``qos``,
    ``array_parallelism``, ``slurm_additional_parameters``) map to submitit's ``slurm_*``
    parameters and are ignored by the local and debug executors.

    ``max_num_timeout`` (submitit's default: 3) is how many timeouts a checkpointable job may be
    requeued after; note that submitit counts every requeue signal as a timeout when
    ``time_min`` is at most 10 (preemptions included).
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster={cluster!r}: expected one of {', '.join(CLUSTERS)}")
    for arg, value in (
        ("time_min", time_min),
        ("gpus_per_node", gpus_per_node),
        ("cpus_per_task", cpus_per_task),
        ("array_parallelism", array_parallelism),
        ("max_num_timeout", max_num_timeout),
        ("nodes", nodes),
        ("tasks_per_node", tasks_per_node),
    ):
        _check_positive_int(arg, value)
    if gpus_per_node == 0:
        gpus_per_node = None
    if mem_gb is not None and (isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or mem_gb <= 0):
        raise ValueError(f"mem_gb={mem_gb!r}: expected a positive number or None")
    for arg, value in (("partition", partition), ("constraint", constraint), ("account", account), ("qos", qos), ("name", name)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{arg}={value!r}: expected a non-empty str or None")

    generic = {
        "timeout_min": time_min,
        "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task,
        "mem_gb": mem_gb,
        "nodes": nodes,
        "tasks_per_node": tasks_per_node,
        "name": name,
    }
    specific = {
        "slurm_partition": partition,
        "slurm_constraint": constraint,
        "slurm_account": account,
        "slurm_qos": qos,
        "slurm_array_parallelism": array_parallelism,
        "slurm_additional_parameters": dict(slurm_additional_parameters) if slurm_additional_parameters else None,
    }
    params = {k: v for k, v in {**generic, **specific}.items() if v is not None}
    ctor = {} if max_num_timeout is None else {"slurm_max_num_timeout": max_num_timeout, "local_max_num_timeout": max_num_timeout}
    return ctor, params


def make_executor(cluster: str, folder: Path, **options: Any) -> submitit.Executor:
    """A submitit executor for ``cluster`` in :data:`CLUSTERS`, logging under ``folder``, with
    ``options`` as :func:`executor_parameters` maps them.

    ``cluster`` is always explicit: submitit's auto-detection picks SLURM whenever ``srun`` is on
    PATH, even with no controller running. (submitit's SLURM executor refuses to be made where
    ``srun`` is not on PATH.)
    """
    ctor, params = executor_parameters(cluster, **options)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **ctor)
    executor.update_parameters(**params)
    return executor


# --------------------------------------------------------------------------- stop flag


class StopFlag(_HarnessStopFlag):
    """The harness's stop flag (``benchmark.core.runtime.StopFlag``: set by SLURM's preemption and
    time-limit signals, polled by the training loop), picklable by reference for the job's flag."""

    def __reduce__(self) -> str | tuple[type, tuple[()]]:
        # The process-wide flag pickles by reference, so that a function pickled by value (say,
        # one defined in a test or notebook) still polls the job process's own flag.
        return "STOP_REQUESTED" if self is STOP_REQUESTED else (StopFlag, ())


STOP_REQUESTED = StopFlag()
"""Process-wide stop flag, set by :class:`CheckpointableCall`'s signal handlers."""


# StopRequested is the harness's own (imported above and re-exported): see the note there.


def raise_if_stop_requested() -> None:
    """Raise :class:`StopRequested` if a stop was requested (call it right after saving)."""
    if STOP_REQUESTED.is_set():
        raise StopRequested(STOP_REQUESTED.reason)


class _SignalGuard:
    """Defers submitit's preemption handling until the wrapped function is ready (or grace ends)."""

    def __init__(self, usr_sig: int, orig_usr: Callable, orig_term: Any, orig_alrm: Any, grace_s: float | None, term_wait_s: float) -> None:
        self.usr_sig = usr_sig
        self.orig_usr = orig_usr
        self.orig_term = orig_term
        self.orig_alrm = orig_alrm
        self.grace_s = grace_s
        self.term_wait_s = term_wait_s
        self.usr_seen = False
        self.term_seen = False
        self.armed = False
        self.finishing = False

    @classmethod
    def install(cls, grace_s: float | None, term_wait_s: float) -> "_SignalGuard | None":
        try:
            usr_sig = JobEnvironment._usr_sig()
        except RuntimeError:
            return None
        orig_usr = signal.getsignal(usr_sig)
        if not isinstance(getattr(orig_usr, "__self__", None), SignalHandler):
            return None  # not inside a submitit job (direct call, debug executor)
        guard = cls(usr_sig, orig_usr, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM), grace_s, term_wait_s)
        signal.signal(signal.SIGALRM, guard._on_alarm)
        signal.signal(signal.SIGTERM, guard._on_term)
        signal.signal(usr_sig, guard._on_usr)
        STOP_REQUESTED.signals_installed = True
        return guard

    def uninstall(self) -> None:
        STOP_REQUESTED.signals_installed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(self.usr_sig, self.orig_usr)
        signal.signal(signal.SIGTERM, self.orig_term)
        signal.signal(signal.SIGALRM, self.orig_alrm)

    def _arm(self) -> None:
        if not self.armed and self.grace_s is not None:
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, max(self.grace_s, 0.001))

    def _on_usr(self, signum: int, frame: types.FrameType | None) -> None:
        if self.finishing:
            return
        self.usr_seen = True
        STOP_REQUESTED.set("requeue", signum)
        self._arm()

    def _on_term(self, signum: int, frame: types.FrameType | None) -> None:
        if self.finishing:
            return
        self.term_seen = True
        STOP_REQUESTED.set("terminate", signum)
        self._arm()

    def _on_alarm(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.finishing:
            self.finish()

    def finish(self) -> None:
        """Run submitit's checkpoint-and-requeue (or checkpoint-and-exit); normally exits the process."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not self.usr_seen:  # _interrupt() and schedulers send SIGTERM just before the USR signal
            deadline = time.monotonic() + self.term_wait_s
            while not self.usr_seen and time.monotonic() < deadline:
                time.sleep(0.02)
        self.finishing = True
        if self.usr_seen:
            self.orig_usr(self.usr_sig, None)  # checkpoint() + scontrol requeue + sys.exit(-1)
        else:
            self.orig_usr.__self__.checkpoint_and_exit(signal.SIGTERM, None)


class CheckpointableCall(submitit.helpers.Checkpointable):
    """Calls ``fn(*args, **kwargs)``, the same call on the first start and after every requeue
    (submitit's ``checkpoint`` is the same call: ``fn`` decides from disk whether it resumes).

    ``fn`` must be picklable (module-level). See the module docstring for the stop protocol;
    ``grace_s`` bounds how long a stop request waits for ``fn`` to raise :class:`StopRequested`
    (keep it below submitit's ``signal_delay_s``, 90 s by default), ``term_wait_s`` how long a
    ``SIGTERM`` waits for the requeue signal.
    """

    def __init__(self, fn: Callable[..., Any], *, grace_s: float | None = 60.0, term_wait_s: float = 5.0) -> None:
        if not callable(fn):
            raise TypeError(f"fn={fn!r} is not callable")
        if grace_s is not None and grace_s <= 0:
            raise ValueError(f"grace_s={grace_s!r}: expected a positive number or None")
        self.fn = fn
        self.grace_s = grace_s
        self.term_wait_s = term_wait_s

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        STOP_REQUESTED.clear()
        guard = _SignalGuard.install(self.grace_s, self.term_wait_s)
        try:
            return self.fn(*args, **kwargs)
        except StopRequested:
            if guard is None:
                raise
            guard.finish()  # exits via SystemExit on the master task
            raise
        finally:
            if guard is not None:
                guard.uninstall()

    def __repr__(self) -> str:
        return f"CheckpointableCall({getattr(self.fn, '__qualname__', self.fn)!r})"


# --------------------------------------------------------------------------- waiting


def _squeue_ids(job_ids: Sequence[str]) -> set[str] | None:
    """Ids (``123`` / ``123_4``) among ``job_ids`` that squeue still lists; None if squeue failed."""
    base = sorted({j.split("_")[0] for j in job_ids})
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(base)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        # squeue errors on ids it no longer knows ("Invalid job id specified"): then none is queued
        return set() if "Invalid job id" in r.stderr else None
    listed = set(r.stdout.split())
    return {j for j in job_ids if j in listed}


def _finished(job: submitit.Job, *, use_sacct: bool) -> bool:
    if use_sacct or not isinstance(job, submitit.SlurmJob):
        return bool(job.done())
    # result files only: no sacct call (it fails, noisily, on clusters without accounting);
    # jobs that die without a result are caught through squeue instead
    subjobs = job._sub_jobs or [job]
    return all(sub.paths.result_pickle.exists() for sub in subjobs)


def _run_debug_job(job: submitit.DebugJob) -> tuple[bool, Any]:
    """Run a debug job in its submission-time environment, without submitit's pdb post-mortem."""
    import pdb  # noqa: T100 - only to silence DebugJob's post-mortem

    saved = pdb.post_mortem
    pdb.post_mortem = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return True, job.result()
    except Exception as e:  # noqa: BLE001 - returned to the caller
        return False, e
    finally:
        pdb.post_mortem = saved  # type: ignore[assignment]


def wait_all(
    jobs: Iterable[submitit.Job],
    timeout_s: float,
    *,
    poll_s: float = 1.0,
    return_exceptions: bool = False,
    lost_grace_s: float | None = 30.0,
) -> list[Any]:
    """Wait (at most ``timeout_s``) for every job, then return their results in order.

    Raises ``TimeoutError`` naming the job ids not finished in time. A job's failure raises its
    submitit exception (or, with ``return_exceptions``, is returned in its place). For SLURM jobs,
    one that ``squeue`` no longer lists and that left no result for ``lost_grace_s`` seconds (killed
    before writing it) counts as finished with an ``UncompletedJobError``: without accounting
    submitit would wait for it forever. (With ``lost_grace_s=None`` submitit's own sacct-based
    ``done()`` is used instead, which needs accounting to notice such jobs.)

    Debug-executor jobs run here, in-process, one at a time (``timeout_s`` cannot interrupt
    them); a failing one raises its own exception, without the pdb post-mortem that submitit's
    ``DebugJob.result()`` opens.
    """
    jobs = list(jobs)
    if not isinstance(timeout_s, (int, float)) or timeout_s < 0:
        raise ValueError(f"timeout_s={timeout_s!r}: expected a non-negative number")
    deadline = time.monotonic() + timeout_s
    pending = {i for i, job in enumerate(jobs)}
    lost: dict[int, UncompletedJobError] = {}
    absent_since: dict[int, float] = {}
    next_squeue = time.monotonic() + max(poll_s, min(5.0, lost_grace_s or 5.0))
    outcomes: dict[int, tuple[bool, Any]] = {}  # debug jobs, run in-process here
    for i, job in enumerate(jobs):
        if isinstance(job, submitit.DebugJob):
            outcomes[i] = _run_debug_job(job)
            pending.discard(i)
    while True:
        pending = {i for i in pending if not _finished(jobs[i], use_sacct=lost_grace_s is None)}
        now = time.monotonic()
        slurm_pending = [i for i in pending if isinstance(jobs[i], submitit.SlurmJob)]
        if lost_grace_s is not None and slurm_pending and now >= next_squeue:
            next_squeue = now + max(poll_s, min(5.0, lost_grace_s or 5.0))
            queued = _squeue_ids([str(jobs[i].job_id) for i in slurm_pending])
            if queued is not None:
                for i in slurm_pending:
                    if str(jobs[i].job_id) in queued:
                        absent_since.pop(i, None)
                    elif now - absent_since.setdefault(i, now) >= lost_grace_s and not _finished(jobs[i], use_sacct=False):
                        job = jobs[i]
                        lost[i] = UncompletedJobError(
                            f"job {job.job_id} left the SLURM queue without writing a result "
                            f"(killed, cancelled or out of memory?); see {job.paths.stderr}"
                        )
                        pending.discard(i)
        if not pending:
            break
        if now >= deadline:
            ids = ", ".join(str(jobs[i].job_id) for i in sorted(pending))
            raise TimeoutError(f"{len(pending)} of {len(jobs)} jobs not finished after {timeout_s}s: {ids}")
        time.sleep(min(poll_s, max(deadline - now, 0.0)))
    results: list[Any] = []
    for i, job in enumerate(jobs):
        if i in lost or i in outcomes:
            ok, value = outcomes.get(i, (False, lost.get(i)))
            if not ok and not return_exceptions:
                raise value
            results.append(value)
            continue
        try:
            results.append(job.result())
        except Exception as e:  # noqa: BLE001 - re-raised unless asked to collect
            if not return_exceptions:
                raise
            results.append(e)
    return results
