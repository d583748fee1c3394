"""Sweeps: expansion, stable ids, plans, skip-existing, status; end to end on the debug executor
and, marked ``slurm``, through submitit on a real local SLURM cluster (preemption included)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")
from torch import nn

from benchmark import sweep as S
from benchmark.core import config as C
from benchmark.methods import Method, StageContext, register_method
from benchmark.methods.base import METHODS
from benchmark.catalogue.methods import load_methods
from benchmark.core.runtime import StopRequested
from benchmark.runner import Environment, run_experiment, run_id_of
from tests.conftest import write_cifar_archive

TINY_SET = """
[set]
"run.suite" = "tiny-test"
"run.dataset" = "cifar10"
"data.download" = false
"backbone.width" = 4
"train.epochs" = 1
"train.batch_size" = 32
"train.lr" = 0.05
"train.precision" = "fp32"
"train.channels_last" = false
"eval.corruptions" = "none"
"eval.batch_size" = 64
"eval.latency_batch" = 8
"eval.latency_repeats" = 1
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=40, as_tar=False)
    return tmp_path / "data"


def write_sweep(tmp_path: Path, head: str, *, slurm: str = 'cluster = "debug"', extra: str = "", data: Path | None = None, name: str = "sweep") -> Path:
    paths = f"""
[paths]
results_dir = "{tmp_path / 'runs'}"
checkpoint_dir = "{tmp_path / 'ckpt'}"
leaderboard_dir = "{tmp_path / 'boards'}"
log_dir = "{tmp_path / 'logs'}"
data_dir = "{data or tmp_path / 'data'}"
cache_dir = "{tmp_path / 'cache'}"
"""
    path = tmp_path / f"{name}.toml"  # the stem names the sweep and its jobs
    path.write_text(f'device = "cpu"\n{head}\n{TINY_SET}\n{extra}\n{paths}\n[slurm]\n{slurm}\n')
    return path


# --------------------------------------------------------------------------- expansion


def test_expansion_filters_seeds_grid_and_stable_ids(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic", "mimo"]\nseeds = [0, 1, 2]', extra='[grid]\n"train.lr" = [0.1, 0.05]')
    tasks = S.expand(S.load_sweep(path))
    assert len(tasks) == 2 * 3 * 2 and all(t.kind == "run" and t.stage == 0 for t in tasks)
    assert {t.name for t in tasks} == {"deterministic[train.lr=0.1]", "deterministic[train.lr=0.05]", "mimo[train.lr=0.1]", "mimo[train.lr=0.05]"}
    for t in tasks:
        resolved = C.resolve(t.config)
        assert t.run_id == run_id_of(resolved) and resolved["train"]["epochs"] == 1 and resolved["run"]["suite"] == "tiny-test"
    again = S.expand(S.load_sweep(path))
    assert [t.run_id for t in again] == [t.run_id for t in tasks]  # stable across expansions
    assert len({t.run_id for t in tasks}) == len(tasks)


def test_deep_ensemble_members_run_first_as_their_own_tasks(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic", "deep_ensemble", "subnetwork"]\nseeds = [0]')
    tasks = S.expand(S.load_sweep(path))
    by_id = {t.run_id: t for t in tasks}
    de = next(t for t in tasks if t.name == "deep_ensemble")
    sub = next(t for t in tasks if t.name == "subnetwork")
    det = next(t for t in tasks if t.name == "deterministic")
    assert de.stage == 1 and sub.stage == 1 and det.stage == 0
    m = int(C.resolve(de.config)["method"]["members"])  # the suite's ensemble size
    assert m >= 2 and len(de.needs) == m and de.needs[0] == det.run_id and sub.needs == [det.run_id]
    members = [by_id[n] for n in de.needs[1:]]
    assert [t.kind for t in members] == ["member"] * (m - 1) and [t.seed for t in members] == list(range(1, m))
    assert all(t.stage == 0 for t in members)
    assert [t.stage for t in tasks] == sorted(t.stage for t in tasks)


@pytest.mark.parametrize("text, match", [
    ('suite = "quick"\nbogus = 1', r"unknown key\(s\) \['bogus'\]; valid keys: name, description, suite"),
    ('suite = "quick"\n[slurm]\ncpus = 4', r"unknown key\(s\) \['cpus'\] in \[slurm\]; valid keys: cluster, partition"),
    ('suite = "quick"\n[paths]\nresult_dir = "x"', r"unknown key\(s\) \['result_dir'\] in \[paths\]; valid keys: results_dir"),
    ('suite = "quick"\n[set]\n"train.epoch" = 1', r"unknown key\(s\) \['epoch'\] in \[train\]; valid keys: .*epochs"),
    ('suite = "quick"\n[set]\n"lr" = 1', r"must be table.key"),
    ('suite = "quick"\nmethods = ["dropout"]', r"methods \['dropout'\] match no run of suite 'quick'; valid choices: .*mc_dropout"),
    ('suite = "nope"', r"unknown suite 'nope'; valid choices: .*quick"),
    ('suite = "quick"\n[slurm]\ncluster = "aws"', r"cluster 'aws' is not valid; valid choices: slurm, local, debug"),
    ('suite = "quick"\nseeds = []', r"seeds must be a non-empty list"),
])
def test_bad_sweep_files_name_the_valid_choices(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(C.ConfigError, match=match):
        S.expand(S.load_sweep(path))


def test_dry_run_prints_plan_and_submits_nothing(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic", "mimo"]\nseeds = [0, 1]', slurm='cluster = "slurm"\npartition = "p1"',
                       data=data_dir)
    assert main(["sweep", str(path), "--dry-run", "--partition", "gpu7"]) == 0
    out = capsys.readouterr().out
    tasks = S.expand(S.load_sweep(path))
    assert all(t.run_id in out for t in tasks) and "4 task(s), 0 done and skipped; cluster slurm" in out
    assert '"partition": "gpu7"' in out  # the command line wins over [slurm]
    assert not (tmp_path / "logs").exists()
    assert main(["sweep", str(tmp_path / "missing.toml"), "--dry-run"]) == 2


# --------------------------------------------------------------------------- planning: member requests and their errors


class _RaisesFirst(Method):
    """Fails before asking for any member."""

    def run(self, ctx: StageContext) -> nn.Module:
        raise ValueError("no members today")


class _BadMember(Method):
    """Asks for one good member, then for one of a method that does not exist."""

    def run(self, ctx: StageContext) -> nn.Module:
        ctx.member_model({"run": {"method": "deterministic", "seed": ctx.seed + 1}, "method": {}})
        ctx.member_model({"run": {"method": "no_such_method"}, "method": {}})
        return self.build()


class _ReadsMembers(Method):
    """Asks for two members, then reads their weights (real work the planning context stops at)."""

    def run(self, ctx: StageContext) -> nn.Module:
        nets = [ctx.member_model({"run": {"method": "deterministic", "seed": ctx.seed + k}, "method": {}}) for k in (1, 2)]
        if float(sum(p.detach().sum() for p in nets[0].parameters())) > 0:  # needs values: a meta tensor has none
            return nets[0]
        return nets[1].cpu()


PLAN_TEST_METHODS = {"plan_test_raises_first": _RaisesFirst, "plan_test_bad_member": _BadMember, "plan_test_reads_members": _ReadsMembers}


@pytest.fixture
def plan_test_methods() -> Any:
    """The methods above, registered for one test and removed afterwards."""
    load_methods()  # the built-in methods first, as any lookup does
    for name, cls in PLAN_TEST_METHODS.items():
        register_method(name)(cls)
    yield
    for name in PLAN_TEST_METHODS:
        METHODS._items.pop(name, None)


def _suite_of(tmp_path: Path, methods: list[str]) -> Path:
    runs = "".join(f'[[runs]]\nname = "{m}"\nrun = {{ method = "{m}" }}\n' for m in methods)
    path = tmp_path / "plan-suite.toml"
    path.write_text(f'name = "plan-suite"\nseeds = [0]\n[defaults.run]\ndataset = "cifar10"\nbackbone = "resnet8"\n{runs}')
    return path


def test_planning_context_is_a_stage_context_sharing_run_context_code() -> None:
    from benchmark.runner import RunContext, StageContextBase

    resolved = C.resolve({"run": {"method": "deep_ensemble", "dataset": "cifar10", "backbone": "resnet8", "seed": 3}})
    ctx = S.PlanningContext(resolved)
    assert isinstance(ctx, StageContextBase) and issubclass(RunContext, StageContextBase)
    for name in ("config", "run_id", "device", "members", "seed", "train_config", "fit", "member_model"):  # StageContext's members
        assert hasattr(ctx, name), name
    assert ctx.run_id == run_id_of(resolved) and ctx.seed == 3 and ctx.device.type == "meta"
    net = ctx.member_model({"run": {"method": "deterministic", "seed": 4}, "method": {}})
    assert next(net.parameters()).is_meta and ctx.requests == [{"run": {"method": "deterministic", "seed": 4}, "method": {}}]
    assert [(m["seed"], m["method"], m["reused"]) for m in ctx.members] == [(4, "deterministic", False)]


@pytest.mark.parametrize("method, error", [
    ("plan_test_raises_first", r"ValueError: no members today"),
    ("plan_test_bad_member", r"UnknownNameError: .*no_such_method.*valid choices: .*deterministic"),
])
def test_a_method_failing_to_describe_its_members_fails_the_plan(tmp_path: Path, plan_test_methods: Any, method: str, error: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    path = write_sweep(tmp_path, f'suite = "{_suite_of(tmp_path, ["deterministic", method])}"')
    named = rf"run {method}-cifar10-resnet8-s0-[0-9a-f]{{10}} \(method '{method}'\)"  # the run id, then the method
    with pytest.raises(S.PlanError, match=rf"^{named}: cannot plan the member runs it reuses: {error}"):
        S.expand(S.load_sweep(path))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert re.search(rf"^error: {named}: cannot plan", captured.err, re.M) and "task(s)" not in captured.out


def test_planning_stops_where_the_method_needs_real_values(tmp_path: Path, plan_test_methods: Any) -> None:
    path = write_sweep(tmp_path, f'suite = "{_suite_of(tmp_path, ["plan_test_reads_members"])}"')
    tasks = S.expand(S.load_sweep(path))
    run = next(t for t in tasks if t.kind == "run")
    members = [t for t in tasks if t.kind == "member"]
    assert [t.seed for t in members] == [1, 2] and run.needs == [t.run_id for t in members] and run.stage == 1


# --------------------------------------------------------------------------- plug-ins reach the jobs


def test_tasks_carry_the_launch_plugins_into_the_job_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.sweep.jobs as jobs

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]')
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    monkeypatch.setenv("PLURES_PLUGINS", "my_methods,lab.more_methods")
    payload = task.payload(sweep)
    assert payload["plugins"] == "my_methods,lab.more_methods"
    monkeypatch.delenv("PLURES_PLUGINS")
    assert task.payload(sweep)["plugins"] is None

    seen: list[str | None] = []
    monkeypatch.setattr(jobs, "run_experiment", lambda config, env: seen.append(os.environ.get("PLURES_PLUGINS")) or [])
    monkeypatch.setenv("PLURES_PLUGINS", "something_else")  # the job's own environment differs from the launch's
    assert jobs.run_task(payload) == {"run_id": task.run_id, "records": []}
    assert seen == ["my_methods,lab.more_methods"]  # set before the run builds anything
    jobs.run_task({**payload, "plugins": None})
    assert seen[-1] is None  # the launch had none: neither has the job
    monkeypatch.setenv("PLURES_PLUGINS", "kept")
    jobs.run_task({k: v for k, v in payload.items() if k != "plugins"})  # a payload from before plug-ins were carried
    assert seen[-1] == "kept"


# --------------------------------------------------------------------------- end to end (debug executor)


@pytest.mark.timeout(240)
def test_debug_cluster_end_to_end_skip_existing_and_status(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main
    from benchmark.records import load_records

    head = 'suite = "quick"\nmethods = ["deterministic", "deep_ensemble"]\nseeds = [0]'
    path = write_sweep(tmp_path, head, data=data_dir)  # deep_ensemble M=4: deterministic s0 (a run), s1-s3 (member tasks)
    assert main(["sweep", str(path), "--cluster", "debug"]) == 0
    out = capsys.readouterr().out
    assert "submitted stage 0" in out and "submitted stage 1" in out
    recs = load_records(tmp_path / "runs").records
    assert sorted(r["identity"]["method"] for r in recs) == ["deep_ensemble", "deterministic"]
    de = next(r for r in recs if r["identity"]["method"] == "deep_ensemble")
    assert all(de["method_extra"]["member_reused"])  # trained by the earlier array, reused here
    assert list((tmp_path / "boards").rglob("leaderboard.md"))
    manifest = json.loads((tmp_path / "logs" / "manifest.json").read_text())
    tasks = S.expand(S.load_sweep(path))
    assert set(manifest["runs"]) == {t.run_id for t in tasks}
    assert all(m["job_id"] and m["stdout"] for m in manifest["runs"].values())
    # status: all done; re-launching skips everything
    assert main(["sweep-status", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\ndone ") == len(tasks) and f"{len(tasks)} done" in out
    assert main(["sweep", str(path), "--cluster", "debug"]) == 0
    out = capsys.readouterr().out
    assert f"0 task(s) submitted, {len(tasks)} skipped" in out
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2


@pytest.mark.timeout(180)
def test_crashed_run_is_failed_others_unaffected_and_resubmitted_alone(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    head = 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]'
    # a learning rate that makes the loss non-finite: the run crashes while training (a bad config
    # value would fail before anything runs, with no record)
    path = write_sweep(tmp_path, head, extra='[grid]\n"train.lr" = [0.05, 1e30]', data=data_dir)
    assert main(["sweep", str(path), "--cluster", "debug"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "training loss is" in captured.err
    rows = {s.task.name: s for s in S.status(S.load_sweep(path))}
    assert rows["deterministic[train.lr=0.05]"].state == "done"
    bad = rows["deterministic[train.lr=1e+30]"]
    assert bad.state == "failed" and "training loss is" in bad.note and bad.log
    failed_records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    assert sorted(r["status"] for r in failed_records) == ["completed", "failed"]
    assert main(["sweep-status", str(path), "--resubmit-failed", "--cluster", "debug"]) == 0
    out = capsys.readouterr().out
    assert "submitted stage 0: 1 task(s)" in out  # the failed run alone
    manifest = json.loads((tmp_path / "logs" / "manifest.json").read_text())
    assert len(manifest["runs"][bad.task.run_id]["previous_jobs"]) == 1
    assert len(manifest["runs"][rows["deterministic[train.lr=0.05]"].task.run_id]["previous_jobs"]) == 0


def test_status_states_from_manifest_notes_and_records(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0, 1, 2]')
    sweep = S.load_sweep(path)
    a, b, c = S.expand(sweep)
    (tmp_path / "logs").mkdir()
    manifest = {"runs": {t.run_id: {"job_id": f"debug_{i}", "stdout": f"/x/{i}.out", "cluster": "debug", "submitted": "2020"} for i, t in enumerate((a, b))},
                "submissions": []}
    (tmp_path / "logs" / "manifest.json").write_text(json.dumps(manifest))
    S.failure_path(tmp_path / "logs", b.run_id).parent.mkdir(parents=True)
    S.failure_path(tmp_path / "logs", b.run_id).write_text(json.dumps({"type": "ValueError", "message": "boom"}))
    states = {s.task.run_id: (s.state, s.note, s.log) for s in S.status(sweep)}
    assert states[a.run_id] == ("running", "submitted; no result yet", "/x/0.out")
    assert states[b.run_id][:2] == ("failed", "ValueError: boom")
    assert states[c.run_id][:2] == ("pending", "not submitted")


# --------------------------------------------------------------------------- the scheduler's answers (no SLURM: its output as text)


SQUEUE_SAMPLE = """1_1|PD|JobArrayTaskLimit|1|100M|1|debug|N/A|plures-sweep:abc
1_0|R|None|1|100M|1|debug|N/A|plures-sweep:abc
5|PD|PartitionConfig|3|1G|1|debug|N/A|(null)
7|PD|PartitionNodeLimit|1|1G|2|debug|N/A|(null)
9|PD|Resources|4|64G|1|gpu|gres:gpu:8|mine plures-sweep:xyz
"""


def test_squeue_and_sinfo_output_parsed() -> None:
    from benchmark.sweep.scheduler import parse_gpus, parse_memory_mb, parse_sinfo, parse_squeue

    jobs = parse_squeue(SQUEUE_SAMPLE)
    assert list(jobs) == ["1_1", "1_0", "5", "7", "9"]
    assert jobs["1_1"].pending and not jobs["1_0"].pending and jobs["1_0"].state == "R"
    assert (jobs["5"].reason, jobs["5"].cpus_per_node, jobs["5"].mem_mb, jobs["5"].comment) == ("PartitionConfig", 3, 1024, "")
    assert (jobs["9"].gpus_per_node, jobs["9"].mem_mb, jobs["9"].partition) == (8, 65536, "gpu")
    assert jobs["1_0"].launched_by("abc") and not jobs["1_0"].launched_by("abd") and jobs["9"].launched_by("xyz")
    assert jobs["5"].launched_by(None)  # a manifest entry from before tokens: any job under its id
    assert [parse_memory_mb(t) for t in ("500M", "1G", "2T", "4096", "N/A", "")] == [500, 1024, 2 * 1024**2, 4096, None, None]
    assert [parse_gpus(t) for t in ("N/A", "(null)", "gres:gpu:2", "gres/gpu:a100:4", "gpu:4(S:0-1)", "gpu:a100:2,gpu:v100:1", "gres:gpu")] == [0, 0, 2, 4, 4, 3, 1]
    sizes = parse_sinfo("vm|debug*|2|18676|(null)\nbig|gpu|64|512000|gpu:8(S:0-1)\nsmall|gpu|8|32000|gpu:2\n")
    assert sizes["debug"].cpus == 2 and sizes["gpu"].cpus == 64 and sizes["gpu"].gpus == 8 and sizes["gpu"].mem_mb == 512000


def test_never_startable_requests_are_told_from_waiting_ones() -> None:
    from benchmark.sweep.scheduler import NodeSize, describe, never_starts, parse_squeue

    jobs = parse_squeue(SQUEUE_SAMPLE)
    sizes = {"debug": NodeSize(cpus=2, mem_mb=18676, gpus=0), "gpu": NodeSize(cpus=64, mem_mb=512000, gpus=8)}
    assert never_starts(jobs["5"], sizes) == "it asks 3 CPUs per node; the largest node of partition debug has 2"
    assert "more nodes than the partition allows (SLURM: PartitionNodeLimit)" in never_starts(jobs["7"], sizes)
    assert never_starts(jobs["1_1"], sizes) is None and never_starts(jobs["9"], sizes) is None and never_starts(jobs["1_0"], sizes) is None
    assert "PartitionConfig" in never_starts(jobs["5"], None)  # sinfo unusable: SLURM's reason still tells
    small = {"gpu": NodeSize(cpus=64, mem_mb=512000, gpus=4)}
    assert never_starts(jobs["9"], small) == "it asks 8 GPU(s) per node; the largest node of partition gpu has 4"
    assert describe(jobs["1_1"], sizes) == "queued: JobArrayTaskLimit (the array's limit on tasks running at once (array_parallelism))"
    assert describe(jobs["9"], sizes).startswith("queued: Resources (waiting for free CPUs")
    assert describe(jobs["5"], sizes).startswith("NEVER STARTS as requested: it asks 3 CPUs") and "scancel 5" in describe(jobs["5"], sizes)
    assert describe(jobs["1_0"], sizes) == "running"


def _fake_slurm_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, squeue: str, sinfo: str = "vm|debug*|2|18676|(null)") -> Path:
    """squeue, sinfo, srun and sbatch stand-ins on PATH: squeue runs the shell snippet ``squeue``
    (its arguments in "$@"), every call is logged, sbatch refuses."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.log"
    scripts = {"squeue": squeue, "sinfo": f"echo '{sinfo}'", "srun": "exit 0", "sbatch": "echo 'sbatch: error: fake' >&2; exit 1"}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def _slurm_manifest(tmp_path: Path, sweep: Any, entries: dict[str, dict[str, Any]], board: dict[str, Any] | None = None) -> None:
    runs = {rid: {"cluster": "slurm", "stdout": f"/x/{rid}.out", "submitted": "2020", "result": str(tmp_path / f"{rid}.pkl"), **m}
            for rid, m in entries.items()}
    manifest = {"runs": runs, "submissions": [], **({"leaderboard_job": board} if board else {})}
    Path(sweep.paths["log_dir"]).mkdir(parents=True, exist_ok=True)
    S.manifest_path(sweep).write_text(json.dumps(manifest))


def test_status_reasons_reused_ids_and_unreachable_controller(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Pending reasons and never-startable jobs from squeue's text; a job id squeue lists for another
    job (no token of ours) is not our run; squeue failing makes the runs unknown, never running."""
    from benchmark.cli import main

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0, 1, 2, 3]', slurm='cluster = "slurm"', data=data_dir)
    sweep = S.load_sweep(path)
    tasks = S.expand(sweep)
    a, b, c, d = tasks
    _slurm_manifest(tmp_path, sweep, {a.run_id: {"job_id": "11_0", "token": "tok"}, b.run_id: {"job_id": "11_1", "token": "tok"},
                                      c.run_id: {"job_id": "12", "token": "tok"}, d.run_id: {"job_id": "13_0", "token": "tok"}},
                    board={"cluster": "slurm", "job_id": "14", "token": "tok", "stdout": "/x/b.out"})
    listing = ("11_0|R|None|1|500M|1|debug|N/A|plures-sweep:tok\n11_1|PD|JobArrayTaskLimit|1|500M|1|debug|N/A|plures-sweep:tok\n"
               "12|PD|PartitionConfig|3|500M|1|debug|N/A|plures-sweep:tok\n13_0|R|None|1|500M|1|debug|N/A|someone else\n"
               "14|PD|Dependency|1|500M|1|debug|N/A|plures-sweep:tok\n")
    calls = _fake_slurm_bin(tmp_path, monkeypatch, f"cat <<'END'\n{listing}END")
    rows, board = S.report(sweep, tasks)
    got = {r.task.run_id: (r.state, r.never_starts, r.note) for r in rows}
    assert got[a.run_id] == ("running", False, "running")
    assert got[b.run_id][:2] == ("pending", False) and "JobArrayTaskLimit" in got[b.run_id][2]
    assert got[c.run_id][:2] == ("pending", True) and "it asks 3 CPUs per node; the largest node of partition debug has 2" in got[c.run_id][2]
    assert got[d.run_id][:2] == ("failed", False) and "now gives its id to another job" in got[d.run_id][2]
    assert (board.state, board.job_id) == ("pending", "14") and board.note.startswith("queued: Dependency")
    assert calls.read_text().count("squeue ") == 1  # one look at the queue for runs and leaderboard
    assert main(["sweep-status", str(path)]) == 1
    captured = capsys.readouterr()
    assert "can never start as requested (jobs 12)" in captured.err and "leaderboard: pending  job 14" in captured.out
    # the controller cannot be reached: unknown, said so, not "running"
    _fake_slurm_bin(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1")
    rows, board = S.report(sweep, tasks)
    assert {r.state for r in rows} == {"unknown"} and board.state == "unknown"
    assert all("cannot be reached (slurm_load_jobs error: Unable to contact slurm controller" in r.note for r in rows)
    assert main(["sweep-status", str(path)]) == 1
    out = capsys.readouterr()
    assert "0 running" in out.out and "4 unknown" in out.out and "controller cannot be reached" in out.err
    with pytest.raises(S.SubmissionError, match=r"controller cannot be reached \(slurm_load_jobs error.*nothing was submitted"):
        S.launch(sweep, [a], log=lambda m: None)  # it cannot tell what is in flight: it submits nothing
    assert json.loads(S.manifest_path(sweep).read_text())["runs"][a.run_id]["job_id"] == "11_0"
    # squeue no longer knows any of the ids: nothing is in flight (left the queue)
    _fake_slurm_bin(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    rows, board = S.report(sweep, tasks)
    assert {r.state for r in rows} == {"failed"} and board.state == "none"


class _FakeJob:
    def __init__(self, job_id: str, folder: Path) -> None:
        self.job_id = job_id
        self.paths = type("P", (), {"stdout": folder / f"{job_id}.out", "stderr": folder / f"{job_id}.err", "result_pickle": folder / f"{job_id}.pkl"})()


def test_relaunch_skips_runs_in_flight_and_depends_on_them(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launch logic against squeue's text: runs whose job is queued under this sweep's token are
    not submitted; new arrays of later stages and the leaderboard job wait for them (afterany)."""
    import benchmark.sweep.submission as sub

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic", "subnetwork"]\nseeds = [0, 1]', slurm='cluster = "slurm"', data=data_dir)
    sweep = S.load_sweep(path)
    tasks = S.expand(sweep)
    det = [t for t in tasks if t.stage == 0]
    ens = [t for t in tasks if t.stage == 1]
    rows = {t.name for t in ens}  # the suite's subnetwork rows (both readings), each on seeds 0 and 1
    assert len(det) == 2 and "subnetwork" in rows and len(ens) == 2 * len(rows)
    _slurm_manifest(tmp_path, sweep, {det[0].run_id: {"job_id": "40_0", "token": "old"}, det[1].run_id: {"job_id": "40_1", "token": "old"}})
    _fake_slurm_bin(tmp_path, monkeypatch, "cat <<'END'\n40_0|R|None|1|500M|1|debug|N/A|plures-sweep:old\n40_1|PD|Resources|1|500M|1|debug|N/A|plures-sweep:old\nEND")
    submitted: list[tuple[str | None, int]] = []

    def fake_submit(executor: Any, calls: list) -> list[_FakeJob]:
        params = executor._executor.parameters
        extra = params.get("additional_parameters") or {}
        assert "plures-sweep:" in extra.get("comment", "")
        submitted.append((extra.get("dependency"), len(calls)))
        base = 50 + len(submitted)
        return [_FakeJob(f"{base}_{i}" if len(calls) > 1 or calls[0][0] is not S.rebuild_leaderboard else str(base), tmp_path) for i in range(len(calls))]

    monkeypatch.setattr(sub, "_submit_array", fake_submit)
    logs: list[str] = []
    launched = S.launch(sweep, tasks, log=logs.append)
    assert [t.run_id for t in launched.in_flight] == [t.run_id for t in det] and launched.submitted == ens
    assert submitted == [("afterany:40", len(ens)), ("afterany:51:40", 1)]  # the ensembles after the members in flight; the board after both
    assert sum("in flight, not submitted again" in m for m in logs) == 2
    manifest = json.loads(S.manifest_path(sweep).read_text())
    assert manifest["runs"][det[0].run_id]["job_id"] == "40_0"  # untouched
    assert manifest["leaderboard_job"]["job_id"] == "52" and manifest["leaderboard_job"]["dependency"] == "afterany:51:40"
    assert manifest["runs"][ens[0].run_id]["token"] == manifest["leaderboard_job"]["token"] != "old"


def test_a_launch_holding_the_lock_blocks_another(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Launches of one sweep are serialised: while one holds ``<log_dir>/launch.lock`` another
    submits nothing and names the holder; once it is released the next launch runs."""
    from benchmark.cli import main

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', data=data_dir)
    sweep = S.load_sweep(path)
    with S.launch_lock(sweep) as lock:
        assert lock == tmp_path / "logs" / "launch.lock"
        assert main(["sweep", str(path), "--cluster", "debug"]) == 2
    err = capsys.readouterr().err
    assert f"another launch of sweep sweep is submitting (process {os.getpid()} on host" in err and "nothing was submitted" in err
    assert not S.manifest_path(sweep).exists() and not list((tmp_path / "logs").glob("jobs/*"))


def test_leaderboard_freshness_against_the_newest_record(tmp_path: Path) -> None:
    sweep = S.load_sweep(write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]'))
    assert S.leaderboard_freshness(sweep, ["tiny-test"]) == ("none", "")
    rec = tmp_path / "runs" / "tiny-test" / "r__1.json"
    rec.parent.mkdir(parents=True)
    rec.write_text("{}")
    state, why = S.leaderboard_freshness(sweep, ["tiny-test"])
    assert state == "missing" and "leaderboard.md does not exist" in why
    board = tmp_path / "boards" / "tiny-test" / "leaderboard.md"
    board.parent.mkdir(parents=True)
    board.write_text("x")
    os.utime(board, (1000, 1000))
    assert S.leaderboard_freshness(sweep, ["tiny-test"]) == ("stale", f"{board} is older than the record r__1.json")
    os.utime(board, None)
    assert S.leaderboard_freshness(sweep, ["tiny-test"]) == ("current", "")


@pytest.mark.timeout(120)
def test_a_sweep_task_never_trains_a_run_whose_lock_is_held(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """A task whose run another process is training (it holds the run lock on the checkpoint folder)
    trains nothing, writes no record and no failure note: two jobs never train into one folder."""
    from benchmark.cli import main
    from benchmark.runner import run_lock

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', data=data_dir)
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    folder = tmp_path / "ckpt" / task.run_id
    with run_lock(folder, task.run_id):
        assert main(["sweep", str(path), "--cluster", "debug"]) == 1
        captured = capsys.readouterr()
        assert "another process holds the run's lock; this task trains nothing" in captured.out
        (row,) = S.status(sweep)  # the holder (this process) runs: the run is running elsewhere, not failed
        assert row.state == "running" and row.note.startswith(f"running elsewhere: process {os.getpid()} on host ")
        assert "holds the run's lock" in row.note
        assert main(["sweep-status", str(path)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["run.lock"]  # no checkpoint, no weights
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))
    assert not S.failure_path(tmp_path / "logs", task.run_id).exists() and S.elsewhere_path(tmp_path / "logs", task.run_id).exists()
    # the holder is gone without a record (a process that has exited): failed, to be relaunched
    holder = json.loads((folder / "run.lock").read_text())
    (folder / "run.lock").write_text(json.dumps({**holder, "pid": _exited_pid()}))
    (row,) = S.status(sweep)
    assert row.state == "failed" and "is gone without a record" in row.note and "relaunch" in row.note
    # the relaunch trains it here; the note goes
    assert main(["sweep", str(path), "--cluster", "debug"]) == 0
    assert [r.state for r in S.status(sweep)] == ["done"] and not S.elsewhere_path(tmp_path / "logs", task.run_id).exists()


def _exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- real SLURM


def _slurm_sweep(tmp_path: Path, data_dir: Path, head: str, cluster: Any, extra: str = "", name: str = "sweep", **slurm: Any) -> Path:
    params = {"cluster": "slurm", "time_min": 10, "cpus_per_task": 1, "mem_gb": 0.5, "array_parallelism": 2, "partition": cluster.partition, **slurm}
    def toml(v: Any) -> str:  # inline tables for dicts (``additional``)
        return "{ " + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + " }" if isinstance(v, dict) else json.dumps(v)

    text = "\n".join(f"{k} = {toml(v)}" for k, v in params.items())
    return write_sweep(tmp_path, head, slurm=text, extra=extra, data=data_dir, name=name)


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_slurm_tiny_sweep_records_and_leaderboard(slurm_cluster: Any, tmp_path: Path, data_dir: Path) -> None:
    from benchmark.records import load_records
    from benchmark.sweep.slurm_job import wait_all

    path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic", "mimo"]\nseeds = [0, 1]', slurm_cluster)
    sweep = S.load_sweep(path)
    tasks = S.expand(sweep)
    launched = S.launch(sweep, tasks, log=lambda m: None)
    assert len(launched.arrays) == 1 and len(launched.arrays[0]) == 4 and launched.leaderboard is not None
    assert all(str(j.job_id).startswith(str(launched.arrays[0][0].job_id).split("_")[0] + "_") for j in launched.arrays[0])
    wait_all(launched.jobs(), timeout_s=200)
    recs = load_records(tmp_path / "runs").records
    assert sorted((r["identity"]["method"], r["identity"]["seed"]) for r in recs) == [("deterministic", 0), ("deterministic", 1), ("mimo", 0), ("mimo", 1)]
    assert {r["training_run_id"] for r in recs} == {t.run_id for t in tasks}
    board = tmp_path / "boards" / "tiny-test" / "leaderboard.md"
    assert board.exists() and "mimo" in board.read_text()
    rows = S.status(sweep, tasks)
    assert [s.state for s in rows] == ["done"] * 4 and all(Path(s.log).exists() for s in rows)


@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_slurm_impossible_request_is_refused_and_nothing_recorded(slurm_cluster: Any, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', slurm_cluster, name="impossible")
    assert main(["sweep", str(path), "--cpus-per-task", str(slurm_cluster.cpus + 1)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "sbatch" in err and ("More processors requested than permitted" in err or "Requested node configuration is not available" in err)
    assert sum(err.count(m) for m in ("More processors requested than permitted", "Requested node configuration is not available")) == 1  # printed once
    assert not (tmp_path / "logs" / "manifest.json").exists()
    assert "impossible" not in subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=20).stdout


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_preempted_sweep_task_resumes_with_same_metrics(slurm_cluster: Any, tmp_path: Path) -> None:
    from benchmark.records import load_records
    from benchmark.sweep.slurm_job import wait_all

    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=200, as_tar=False)  # 1000 training images
    extra = '[grid]\n"train.epochs" = [6]\n"train.batch_size" = [20]'
    path = _slurm_sweep(tmp_path, tmp_path / "data", 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', slurm_cluster, extra=extra)
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    launched = S.launch(sweep, [task], log=lambda m: None)
    (job,) = launched.arrays[0]
    deadline = time.monotonic() + 120
    while "epoch 1/6" not in (job.paths.stdout.read_text() if job.paths.stdout.exists() else ""):
        assert time.monotonic() < deadline, "the task did not finish its first epoch in time"
        time.sleep(0.2)
    job._interrupt(timeout=False)  # SIGTERM then SIGUSR2, as a preemption
    wait_all([job, launched.leaderboard], timeout_s=200)
    log = job.paths.stdout.read_text()
    assert "(requeued: restart 1 of job " in log and "resuming" in log
    (rec,) = load_records(tmp_path / "runs").records
    # the same run uninterrupted, here (1 thread, as the task with cpus_per_task=1)
    env = Environment(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "ref-runs",
                      checkpoint_dir=tmp_path / "ref-ckpt", device="cpu", progress=False, log=lambda m: None)
    run_experiment(task.config, env)
    (ref,) = load_records(tmp_path / "ref-runs").records
    assert rec["run_id"] == ref["run_id"]
    for key in ("accuracy", "nll", "ece"):
        assert rec["metrics"]["clean"][key] == pytest.approx(ref["metrics"]["clean"][key], abs=1e-6), key


@pytest.mark.timeout(180)
def test_relaunch_resumes_an_interrupted_run_from_its_checkpoint(tmp_path: Path, data_dir: Path, stop_after: Any,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A run stopped mid-epoch (as a killed job leaves it: a checkpoint, no record) is submitted
    again (no resume flag: the run finds its checkpoint), the plan says from where, and its record
    equals an uninterrupted run's."""
    from benchmark.cli import main
    from tests.test_runner import without_timings

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', extra='[grid]\n"train.epochs" = [2]', data=data_dir)
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    p = sweep.paths
    env = dict(data_dir=str(data_dir), cache_dir=str(p["cache_dir"]), device="cpu", progress=False, log=lambda m: None)
    with pytest.raises(StopRequested):  # stopped in epoch 2 after step 3 (6 steps per epoch and a check after each epoch)
        run_experiment(task.config, Environment(results_dir=Path(p["results_dir"]), checkpoint_dir=Path(p["checkpoint_dir"]),
                                                stop=stop_after(6 + 3), **env))
    assert S.is_done(task, sweep, S.completed_runs(Path(p["results_dir"]))) is False
    assert main(["sweep", str(path), "--cluster", "debug"]) == 0
    out = capsys.readouterr().out
    assert "resume from epoch 2 after step 3" in out  # in the plan and in the submission's log
    manifest = json.loads((tmp_path / "logs" / "manifest.json").read_text())
    assert manifest["runs"][task.run_id]["resume"] == "resume from epoch 2 after step 3"
    assert "resuming" in out  # the debug cluster's task prints here: the run resumed from its checkpoint by itself
    (rec,) = [json.loads(q.read_text()) for q in Path(p["results_dir"]).rglob("*.json")]
    [ref] = run_experiment(task.config, Environment(results_dir=tmp_path / "ref-runs", checkpoint_dir=tmp_path / "ref-ckpt", **env))
    assert without_timings(rec) == without_timings(json.loads(ref.read_text()))


def test_a_bad_grid_value_fails_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every grid point is resolved (types, ranges, choices) at plan time: --dry-run fails, naming the value."""
    from benchmark.cli import main

    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]', extra='[grid]\n"train.schedule" = ["cosine", "bogus"]')
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.schedule = 'bogus' is not valid" in err and "cosine, step, linear" in err and "Traceback" not in err


def test_unwritable_results_folder_fails_before_submission(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A results folder that cannot be created (its parent is a file: true for root as well) fails
    the launch with a message naming it; nothing is submitted, no manifest is written."""
    from benchmark.cli import main

    (tmp_path / "blocker").write_text("a file, not a folder")
    path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]')
    path.write_text(path.read_text().replace(f'results_dir = "{tmp_path / "runs"}"', f'results_dir = "{tmp_path / "blocker" / "runs"}"'))
    assert main(["sweep", str(path), "--cluster", "debug"]) == 2
    err = capsys.readouterr().err
    assert f"results_dir folder {tmp_path / 'blocker' / 'runs'} is not writable" in err and "nothing was submitted" in err
    assert "Traceback" not in err and not (tmp_path / "logs" / "manifest.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder; the file-parent test covers root")
def test_read_only_results_folder_fails_before_submission(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o555)
    try:
        path = write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]')
        assert main(["sweep", str(path), "--cluster", "debug"]) == 2
        err = capsys.readouterr().err
        assert f"results_dir folder {tmp_path / 'runs'} is not writable" in err and not (tmp_path / "logs" / "manifest.json").exists()
    finally:
        (tmp_path / "runs").chmod(0o755)


def test_writability_probe_really_writes(tmp_path: Path) -> None:
    """The check writes and removes a probe file (it leaves nothing behind) and creates missing folders."""
    sweep = S.load_sweep(write_sweep(tmp_path, 'suite = "quick"\nmethods = ["deterministic"]'))
    S.check_writable(sweep)
    for key in ("results_dir", "checkpoint_dir", "log_dir", "leaderboard_dir"):
        assert Path(sweep.paths[key]).is_dir() and list(Path(sweep.paths[key]).iterdir()) == []


def test_a_refused_submission_is_reported_once(capsys: pytest.CaptureFixture) -> None:
    """submitit prints sbatch's stderr and raises with it: the SubmissionError alone carries it."""
    import contextlib
    import sys

    from benchmark.sweep.submission import _submit_array

    class Refusing:
        @contextlib.contextmanager
        def batch(self):
            yield

        def submit(self, fn, *args, **kwargs):
            text = "sbatch: error: Batch job submission failed: Requested node configuration is not available"
            print(text, file=sys.stderr)  # as submitit's command runner does before raising
            raise RuntimeError(text)

    with pytest.raises(S.SubmissionError, match="refused: sbatch: error") as info:
        _submit_array(Refusing(), [(print, (), {})])
    assert "sbatch" not in capsys.readouterr().err and str(info.value).count("sbatch: error") == 1


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_slurm_killed_task_resubmitted_resumes_from_its_checkpoint(slurm_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kill -9 of a training job (no requeue, no stop: as an out-of-memory kill or a node failure),
    then ``sweep-status --resubmit-failed``: the run continues from its last checkpoint and its record
    equals an uninterrupted run's (history included)."""
    from benchmark.cli import main
    from benchmark.records import load_records

    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=200, as_tar=False)  # 1000 training images
    extra = '[grid]\n"train.epochs" = [4]\n"train.batch_size" = [20]'
    path = _slurm_sweep(tmp_path, tmp_path / "data", 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', slurm_cluster, extra=extra)
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    launched = S.launch(sweep, [task], log=lambda m: None)
    (job,) = launched.arrays[0]
    deadline = time.monotonic() + 150
    while "epoch 1/4" not in (job.paths.stdout.read_text() if job.paths.stdout.exists() else ""):
        assert time.monotonic() < deadline, "the task did not finish its first epoch in time"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=KILL", "--full", str(job.job_id)], check=True, timeout=20)
    while str(job.job_id) in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20).stdout:
        assert time.monotonic() < deadline + 60, "the killed job stayed in the queue"
        time.sleep(0.5)
    assert not load_records(tmp_path / "runs").records
    (row,) = S.status(sweep, [task])
    assert row.state == "failed"
    capsys.readouterr()
    assert main(["sweep-status", str(path), "--resubmit-failed", "--wait", "250"]) == 0
    out = capsys.readouterr().out
    assert "resume from epoch 2" in out
    manifest = json.loads((tmp_path / "logs" / "manifest.json").read_text())
    log = Path(manifest["runs"][task.run_id]["stdout"]).read_text()
    assert "resuming" in log
    (rec,) = load_records(tmp_path / "runs").records
    env = Environment(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "ref-runs",
                      checkpoint_dir=tmp_path / "ref-ckpt", device="cpu", progress=False, log=lambda m: None)
    run_experiment(task.config, env)
    (ref,) = load_records(tmp_path / "ref-runs").records
    hist, ref_hist = rec["training"]["history"]["train"], ref["training"]["history"]["train"]
    assert [e["rows"] for e in hist] == [e["rows"] for e in ref_hist] and len(hist) == 4
    for a, b in zip(hist, ref_hist):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["lr"] == b["lr"]
    for key in ("accuracy", "nll", "ece"):
        assert rec["metrics"]["clean"][key] == pytest.approx(ref["metrics"]["clean"][key], abs=1e-6), key


def _squeue(*args: str) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def _until(check: Any, timeout_s: float, what: str, poll_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(poll_s)


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_slurm_relaunch_in_flight_concurrent_launches_and_lost_leaderboard(slurm_cluster: Any, tmp_path: Path, data_dir: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """Against the real controller: two launches at once submit each run once; a relaunch while the
    runs are queued submits nothing; a cancelled leaderboard job is reported by sweep-status and
    rebuilt by a relaunch once the runs are done. The jobs are submitted held (sbatch --hold) so
    that they stay queued until the test releases them."""
    import sys

    from benchmark.cli import main

    path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0, 1]', slurm_cluster, name="relaunch",
                        additional={"hold": True})
    sweep = S.load_sweep(path)
    tasks = S.expand(sweep)
    repo = Path(__file__).resolve().parent.parent
    launches = [subprocess.Popen([sys.executable, "-m", "benchmark", "sweep", str(path)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for p in launches]
    assert sorted(rc for rc, _, _ in outcomes) in ([0, 0], [0, 2]), outcomes
    for rc, out, err in outcomes:  # the other one either waited its turn (then saw the runs in flight) or found the lock held
        assert rc == 0 and ("2 task(s) submitted" in out or "0 task(s) submitted, 0 skipped (done), 2 in flight" in out) or \
            rc == 2 and "another launch of sweep relaunch is submitting" in err, (rc, out, err)
    assert sum("2 task(s) submitted" in out for _, out, _ in outcomes) == 1
    manifest = json.loads(S.manifest_path(sweep).read_text())
    jobs = {t.run_id: manifest["runs"][t.run_id]["job_id"] for t in tasks}
    board = manifest["leaderboard_job"]["job_id"]
    queued = _squeue("-n", "relaunch,relaunch-leaderboard", "-o", "%i %r")
    assert sorted(q.split()[0] for q in queued) == sorted([*jobs.values(), board])  # each run once, one leaderboard job
    assert all(q.endswith("JobHeldUser") for q in queued)
    # a relaunch while they are queued submits nothing
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 task(s) submitted, 0 skipped (done), 2 in flight" in out and out.count("in flight, not submitted again: ") == 2
    assert f"leaderboard job {board} in flight, not submitted again" in out
    assert sorted(q.split()[0] for q in _squeue("-n", "relaunch,relaunch-leaderboard", "-o", "%i")) == sorted([*jobs.values(), board])
    assert json.loads(S.manifest_path(sweep).read_text())["runs"] == manifest["runs"]
    rows, lb = S.report(sweep, tasks)
    assert [r.state for r in rows] == ["pending", "pending"] and all("JobHeldUser" in r.note for r in rows) and lb.state == "pending"
    # the leaderboard job is lost; the runs go ahead and finish
    subprocess.run(["scancel", board], check=True, timeout=30)
    subprocess.run(["scontrol", "release", next(iter(jobs.values())).split("_")[0]], check=True, timeout=30)
    _until(lambda: all(r.state == "done" for r in S.status(sweep, tasks)), 240, "the runs finishing")
    capsys.readouterr()
    assert main(["sweep-status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "2 done" in out and "leaderboard: missing" in out and f"job {board} left the queue without building it" in out
    assert "relaunch the sweep to rebuild it" in out
    # the relaunch rebuilds it, submitting no run
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 task(s) submitted, 2 skipped (done), 0 in flight" in out and "(rebuilding: " in out
    rebuilt = json.loads(S.manifest_path(sweep).read_text())["leaderboard_job"]
    assert rebuilt["job_id"] != board and rebuilt["previous_jobs"] == [board] and rebuilt["dependency"] is None
    subprocess.run(["scontrol", "release", rebuilt["job_id"]], check=True, timeout=30)  # held as the file asks
    _until(lambda: S.report(sweep, tasks)[1].state == "done", 120, "the leaderboard job")
    assert "deterministic" in (tmp_path / "boards" / "tiny-test" / "leaderboard.md").read_text()
    assert main(["sweep-status", str(path)]) == 0
    assert "leaderboard: done" in capsys.readouterr().out


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_slurm_never_startable_request_flagged(private_slurm: Any, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    """On a cluster without EnforcePartLimits sbatch accepts a task asking more CPUs than any node
    has; it would wait for ever: sweep-status flags it, with SLURM's reason and the node's size."""
    from benchmark.cli import main

    cluster = private_slurm(enforce_part_limits="NO")
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf_path))
    path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', cluster, name="toobig",
                        cpus_per_task=cluster.cpus + 1)
    sweep = S.load_sweep(path)
    assert main(["sweep", str(path)]) == 0  # accepted
    capsys.readouterr()
    (job,) = _until(lambda: [q for q in _squeue("-n", "toobig", "-o", "%i %r") if "PartitionConfig" in q], 30, "the pending reason")
    assert main(["sweep-status", str(path)]) == 1
    captured = capsys.readouterr()
    expected = f"NEVER STARTS as requested: it asks {cluster.cpus + 1} CPUs per node; the largest node of partition {cluster.partition} has {cluster.cpus}"
    assert expected in captured.out and "can never start as requested" in captured.err
    (row,) = S.status(sweep)
    assert row.state == "pending" and row.never_starts and row.job_id == job.split()[0]


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_slurm_reused_job_id_and_unreachable_controller(slurm_cluster: Any, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A manifest job id that the controller now gives to another job (as after a reset) is not taken
    for the run: the plan submits the run, status says the job is gone. A controller that cannot be
    reached makes the runs unknown (never running) and the launch refuses."""
    from benchmark.cli import main

    path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', slurm_cluster, name="reused")
    sweep = S.load_sweep(path)
    (task,) = S.expand(sweep)
    other = subprocess.run(["sbatch", "--parsable", "--hold", "-J", "someone-else", "--wrap", "sleep 60"], capture_output=True, text=True,
                           check=True, timeout=30).stdout.strip()
    try:
        _slurm_manifest(tmp_path, sweep, {task.run_id: {"job_id": other, "token": "before-the-reset"}})
        assert main(["sweep", str(path), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"\bsubmit\s+{task.run_id}", out) and "in flight" not in out
        (row,) = S.status(sweep)
        assert row.state == "failed" and f"job {other} is gone: the controller now gives its id to another job" in row.note
    finally:
        subprocess.run(["scancel", other], timeout=30)
    dead = tmp_path / "dead-slurm.conf"  # the same cluster, with the controller's port closed
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=\d+$", "SlurmctldPort=1", Path(slurm_cluster.conf_path).read_text()))
    monkeypatch.setenv("SLURM_CONF", str(dead))
    (row,) = S.status(sweep)
    assert row.state == "unknown" and "the SLURM controller cannot be reached" in row.note and "Unable to contact slurm controller" in row.note
    with pytest.raises(S.SubmissionError, match="controller cannot be reached .*nothing was submitted"):
        S.launch(sweep, [task], log=lambda m: None)
