"""The capacity study's machinery: the suite's cells (one recipe per width, the deep ensemble's members are
the suite's own deterministic runs), the t interval over seeds, the plan with its estimates (records of
another seed, else a probe of the real step; members counted where the harness trains them), and a
miniature of the study end to end through the same commands (bench with an interruption and a
continuation that trains nothing twice, bench --plan, study)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.evaluation.seed_interval import t_interval, t_quantile
from benchmark.leaderboard.frame import flatten
from benchmark.records import load_records
from benchmark.runner import check_runs, member_config, run_id_of
from test_iterating import TINY_SUITE


def test_t_quantiles_match_the_tables_and_the_interval_is_mean_pm_t_sd_over_root_n() -> None:
    for df, table in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.95, 5) == pytest.approx(2.0150, abs=5e-4) and t_quantile(0.025, 3) == pytest.approx(-3.1824, abs=5e-4)
    iv = t_interval([1.0, 2.0, 4.0])
    half = 4.3027 * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert iv.mean == pytest.approx(7 / 3) and iv.low == pytest.approx(7 / 3 - half, abs=1e-3) and iv.high == pytest.approx(7 / 3 + half, abs=1e-3)
    assert not iv.excludes_zero and t_interval([1.0, 1.1, 0.9]).excludes_zero
    one = t_interval([0.5])
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, float("nan")])


def _capacity() -> list[dict]:
    _, runs = C.load_suite("capacity")
    return check_runs([(f"{r['run']['name']} seed {r['run']['seed']}", r) for r in runs])


def test_capacity_suite_one_recipe_per_width_and_the_ensembles_reuse_its_deterministic_runs() -> None:
    from benchmark.sweep.plan import member_requests

    runs = _capacity()
    widths = sorted({r["backbone"]["width"] for r in runs})
    assert widths == [8, 16, 32]
    # one recipe for every width: a method's cells differ in the width and the seed only
    by_name: dict[str, set[str]] = {}
    for r in runs:
        flat = {k: v for k, v in flatten(r).items() if k not in ("backbone.width", "run.seed", "run.name")}
        by_name.setdefault(re.sub(r"-w\d+$", "", r["run"]["name"]), set()).add(json.dumps(flat, sort_keys=True, default=str))
    assert all(len(v) == 1 for v in by_name.values()), {k: len(v) for k, v in by_name.items()}
    assert set(by_name) >= {"deterministic", "mimo-m2-rep1", "mimo-m3-rep1", "mimo-m3-rep2", "deep_ensemble", "subnetwork"}
    # the batch-repetition-2 cells run last (after every width's core cells): the first to go missing if the budget ends
    order = [re.sub(r"-w\d+$", "", r["run"]["name"]) for r in runs]
    assert order[-9:] == ["mimo-m3-rep2"] * 9, order[-9:]
    # 3 seeds per cell; every member run an ensemble (or a subnetwork parent) asks for is a deterministic run of the suite
    det = {run_id_of(r) for r in runs if r["run"]["method"] == "deterministic"}
    for w in widths:
        for name in by_name:
            seeds = sorted(r["run"]["seed"] for r in runs if r["backbone"]["width"] == w and re.sub(r"-w\d+$", "", r["run"]["name"]) == name)
            assert seeds[:3] == [0, 1, 2], (name, w, seeds)
    members = 0
    for r in runs:
        for overrides in member_requests(r):
            assert run_id_of(member_config(r, overrides)) in det, (r["run"]["name"], r["run"]["seed"], overrides)
            members += 1
    assert members == 3 * 3 * (2 + 1)  # per width and seed: two deep-ensemble members and one subnetwork parent


# the tiny bench suite's defaults (tiny CIFAR-10, ResNet-8, 2 epochs), two seeds, corrupted cells on a 4-image sample
MINI = (TINY_SUITE.split("[[runs]]")[0].replace('name = "tinybench"', 'name = "ministudy"').replace("seeds = [0]", "seeds = [0, 1]")
        + 'corruptions = "regenerated"\ncorruption_set = "benchmark15"\ncorruption_severities = [3]\ncorruption_subset = 4\n')
for _w in (4, 8):
    MINI += f"""
[[runs]]
name = "deterministic-w{_w}"
run = {{ method = "deterministic" }}
backbone = {{ width = {_w} }}
seeds = [0, 1, 2, 3]

[[runs]]
name = "mimo-w{_w}"
run = {{ method = "mimo" }}
backbone = {{ width = {_w} }}
method = {{ members = 2, batch_repetition = 1 }}

[[runs]]
name = "deep_ensemble-w{_w}"
run = {{ method = "deep_ensemble" }}
backbone = {{ width = {_w} }}
method = {{ members = 2 }}
"""


def _finals(ckpt: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in ckpt.rglob("final.pt")}


def test_miniature_study_end_to_end(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    """Two widths, two seeds: the plan before anything (probes), a bench interrupted inside a MIMO run at width 8,
    the plan then (done / resume / start, rates from the finished records of another seed, members already trained
    reused), the same bench again finishing without training anything twice, and the study page from its records."""
    from benchmark.core.runtime import StopFlag

    root, _ = cifar10_dir
    suite = tmp_path / "ministudy.toml"
    suite.write_text(MINI)
    common = ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
              "--checkpoint-dir", str(tmp_path / "ckpt")]
    bench = ["bench", str(suite), *common, "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress", "--no-cost-pass"]

    # the plan of a fresh study: every run starts; rates probed; the ensembles' members are the suite's deterministic runs
    assert cli.main(bench + ["--plan"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 0 done (skipped), 0 to resume from a checkpoint, 16 to start")
    total = next(line for line in out.splitlines() if line.startswith("estimated time left"))  # (a busy machine's warning may follow)
    assert "probe: " in out and "ms/step (mean of 4)" in out and "from records" in total
    assert re.search(r"deep_ensemble-w8 seed 1: start.*\n\s+estimate \S+ s\+: member deterministic seed 2 0 s \[trained earlier in this bench: "
                     r"reused\]; member deterministic seed 3 0 s \[same source\]; evaluation not estimated", out), out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()  # the plan writes nothing

    make_env = cli.make_env
    _, runs = C.load_suite(str(suite))
    [target] = [run_id_of(res) for res in check_runs([("mimo-w8 seed 1", r) for r in runs if r["run"]["name"] == "mimo-w8" and r["run"]["seed"] == 1])]

    def interrupting_env(args):  # a SIGTERM after the first epoch of the width-8 MIMO run of seed 1, as a signal would set it
        env, flag = make_env(args), StopFlag()
        say, env.stop = env.log, flag
        env.log = lambda m: (say(m), flag.set("SIGTERM") if m.startswith(f"{target} train epoch 1/2") else None)
        return env

    monkeypatch.setattr(cli, "make_env", interrupting_env)
    assert cli.main(bench) == 130
    err = capsys.readouterr()
    assert "[14/16] mimo-w8 seed 1" in err.out and "run the same command again to continue it" in err.err
    first = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(first) == 13  # width 4 complete (4 + 2 + 2), width 8's deterministic runs (4) and MIMO seed 0
    finals = _finals(tmp_path / "ckpt")
    monkeypatch.setattr(cli, "make_env", make_env)

    # the plan now: 13 done, the MIMO run resumes, the ensembles start; a rate from the finished record of its other seed
    assert cli.main(bench + ["--plan"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 13 done (skipped), 1 to resume from a checkpoint, 2 to start")
    plan = out.split("  mimo-w8 seed 1: ")[1].splitlines()
    assert plan[0].startswith("resume from epoch 2")
    assert re.match(r"\s+estimate \S+ s: train 1/2 epochs \S+ s \[\S+ s/epoch, record mimo-\S+-s0-\S+\.json, ", plan[1]), plan[1]
    assert re.search(r"deep_ensemble-w8 seed 1: start.*\n\s+estimate \S+ s\+: member deterministic seed 2 0 s \[its final weights exist: reused\]",
                     out), out
    assert "0 probed" in next(line for line in out.splitlines() if line.startswith("estimated time left"))

    # the same bench again: finishes, trains nothing twice
    assert cli.main(bench) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 13 done (skipped), 1 to resume from a checkpoint, 2 to start")
    assert re.search(r"resuming mimo-\S+ train after epoch 1 of 2", out)
    assert "train epoch 1/2" not in out and len(re.findall(r"train epoch 2/2", out)) == 1  # only the interrupted run's last epoch
    after = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(after) == 16 and set(first) <= set(after)
    assert all(_finals(tmp_path / "ckpt")[p] == v for p, v in finals.items())  # no finished weights written again
    assert len(re.findall(r"reusing trained member", out)) == 4  # both width-8 ensembles reuse the deterministic runs

    # the study from the records
    assert cli.main(["study", str(suite), "--results-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards")]) == 0
    out = capsys.readouterr().out
    assert "study ministudy along backbone.width: 16 of 16 runs finished" in out
    page = (tmp_path / "boards" / "ministudy" / "study.md").read_text()
    assert (tmp_path / "boards" / "ministudy" / "study.png").is_file()
    assert "| Row | width 4 | width 8 | slope / doubling |" in page and "### Δ cNLL (corrupted)" in page and "### DEE" in page
    recs = load_records(tmp_path / "runs" / "ministudy").records

    def acc(method: str, width: int, seed: int) -> float:
        [r] = [r for r in recs if r["identity"]["method"] == method and r["config"]["backbone"]["width"] == width and r["identity"]["seed"] == seed]
        return 100 * r["metrics"]["clean"]["accuracy"]

    gaps = {w: [acc("mimo", w, s) - acc("deterministic", w, s) for s in (0, 1)] for w in (4, 8)}
    row = next(line for line in page.split("### Δ Acc (pp)")[1].splitlines() if line.startswith("| mimo"))
    iv4 = t_interval(gaps[4])
    assert f"{iv4.mean:+.2f} [{iv4.low:+.2f}, {iv4.high:+.2f}]" in row and "(2)" in row
    slope = t_interval([gaps[8][s] - gaps[4][s] for s in (0, 1)])  # two widths: the slope per doubling is the change
    assert f"{slope.mean:+.2f} [" in row.split("|")[-2]
    assert not any("†" in line for line in page.splitlines() if line.startswith("| "))  # every record ran on this CPU
    csv = (tmp_path / "boards" / "ministudy" / "study.csv").read_text()
    assert csv.startswith("dataset,backbone,row,axis,value,metric,mean,low,high,n,seeds,mixed_device,devices,text\n")

    # the training cost per cell: the records' own training seconds (the ensembles reuse their members: none of their own)
    def secs(method: str, width: int) -> list[float]:
        return [r["cost"]["train_seconds"] for r in recs if r["identity"]["method"] == method and r["config"]["backbone"]["width"] == width]

    cost = page.split("### Training cost per cell")[1]
    total = sum(r["cost"]["train_seconds"] for r in recs) / 3600
    assert f"Training time of this block's records: {total:.2f} h (" in cost
    mimo8 = secs("mimo", 8)
    row = next(line for line in cost.splitlines() if line.startswith("| mimo"))
    assert row.split("|")[3].strip() == f"{sum(mimo8) / 2:.0f} s ({min(mimo8):.0f}-{max(mimo8):.0f})"
    assert all(x == 0 for x in secs("deep_ensemble", 8)) and "0 s (no training of its own)" in cost

    # a gap whose paired records ran on different kinds of CPU is marked, and each cell names its devices
    other = next((tmp_path / "runs" / "ministudy").glob(f"{target}__*.json"))
    rec = json.loads(other.read_text())
    from benchmark.leaderboard.study import device_kind

    this_cpu = device_kind(rec)  # what the other records name: the CPU model and its vector instruction sets
    rec["provenance"]["cpu"] = {"model": "Another CPU"}
    other.write_text(json.dumps(rec))
    assert cli.main(["study", str(suite), "--results-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards"), "--no-plot"]) == 0
    capsys.readouterr()
    page = (tmp_path / "boards" / "ministudy" / "study.md").read_text()
    row = next(line for line in page.split("### Δ Acc (pp)")[1].splitlines() if line.startswith("| mimo"))
    assert row.split("|")[2].strip().endswith("(2)") and row.split("|")[3].strip().endswith("(2)†")  # width 8's seed 1 ran elsewhere
    assert row.split("|")[4].strip().endswith("(2)†")  # and so the slope reads records of two CPU kinds
    de_row = next(line for line in page.split("### Δ Acc (pp)")[1].splitlines() if line.startswith("| deep_ensemble"))
    assert "†" not in de_row  # the deep ensemble's records and its deterministic pairs all ran on this CPU
    devices = next(line for line in page.split("### Seeds and devices per cell")[1].splitlines() if line.startswith("| mimo"))
    seeds, _, kinds = devices.split("|")[3].strip().partition(" on ")
    assert seeds == "0 1" and set(kinds.split(", ")) == {"Another CPU", this_cpu}

    # a cell without a finished record is listed as not finished, never filled from elsewhere
    for p in (tmp_path / "runs" / "ministudy").glob("mimo-*-s1-*.json"):
        p.unlink()
    assert cli.main(["study", str(suite), "--results-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards"),
                     "--no-plot"]) == 0
    assert "14 of 16 runs finished" in capsys.readouterr().out
    page = (tmp_path / "boards" / "ministudy" / "study.md").read_text()
    assert "- **Not finished** (2 of 16 runs): mimo-w4 seed 1; mimo-w8 seed 1" in page and "(1 seed)" in page


def test_estimating_context_sees_each_methods_stages_and_members(tiny_run_config) -> None:
    """What a method trains, learnt by running its stages: the deep ensemble trains only members, the subnetwork
    ensemble its parent (a member run) and then its own stage, the snapshot ensemble one stage (its check after
    training, which needs trained snapshots, ends the discovery); a probed stage has a measured step time."""
    import torch

    from benchmark.estimate import discover

    def resolved(method: str, options: dict) -> dict:
        cyclic = {"train": {"schedule": "cyclic_cosine", "warmup_epochs": 0.0}} if method == "snapshot" else {}
        return C.resolve(C.merge(tiny_run_config, {"run": {"method": method}, "method": options, **cyclic}))

    seen = {}
    for method, options in (("deep_ensemble", {"members": 2}), ("subnetwork", {"members": 2}), ("snapshot", {"members": 2}),
                            ("mimo", {"members": 2, "batch_repetition": 2})):
        ctx = discover(resolved(method, options), torch.device("cpu"), num_classes=10, image_size=32, probe=lambda stage: True)
        seen[method] = ([s.stage for s in ctx.stages], [(m["method"], m["seed"]) for m in ctx.members])
        for s in ctx.stages:
            assert s.probe is not None and s.probe.seconds_per_step > 0 and s.probe.steps == 4 and s.probe.batch_size == 32
    assert seen == {"deep_ensemble": ([], [("deterministic", 0), ("deterministic", 1)]),
                    "subnetwork": (["subnetworks"], [("deterministic", 0)]), "snapshot": (["train"], []), "mimo": (["train"], [])}
    with pytest.raises(C.ConfigError, match="cannot estimate what it trains: ValueError"):  # before any stage: the run's own error
        discover(resolved("snapshot", {"members": 5}), torch.device("cpu"), num_classes=10, image_size=32, probe=lambda stage: False)


def test_learning_curve_tool_reads_the_curve_and_scales_the_studys_hours(cifar10_dir, tmp_path: Path, capsys) -> None:
    """The curve from the records of the curve suite; the study's hours for a fresh machine (every run, finished ones
    too, nothing reused; rates from the records where they exist) scaled by the epochs; the rule's pick."""
    from benchmark.tools import learning_curve

    root, _ = cifar10_dir
    curve = tmp_path / "curve.toml"
    curve.write_text(TINY_SUITE.split("[[runs]]")[0].replace('name = "tinybench"', 'name = "curve"')
                     + '\n[[runs]]\nname = "epochs-1"\nrun = { method = "deterministic" }\ntrain = { epochs = 1 }\n'
                     + '\n[[runs]]\nname = "epochs-2"\nrun = { method = "deterministic" }\ntrain = { epochs = 2 }\n')
    study = tmp_path / "ministudy.toml"
    study.write_text(MINI)
    common = ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs")]
    for suite, only in ((curve, "epochs-2"), (study, "deterministic-w4")):
        assert cli.main(["bench", str(suite), *common, "--checkpoint-dir", str(tmp_path / "ckpt"), "--leaderboard-dir", str(tmp_path / "boards"),
                         "--no-progress", "--no-cost-pass", "--only", only]) == 0
    capsys.readouterr()
    assert learning_curve.main(["--curve", str(curve), "--study", str(study), *common, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in out.splitlines() if re.match(r"\| \d+ \|", line)}
    assert rows["1"][1] == "not finished" and rows["2"][0] == "0" and rows["2"][4] == "yes"
    [rec] = load_records(tmp_path / "runs" / "curve").records
    assert rows["2"][1] == f"{100 * rec['metrics']['clean']['accuracy']:.2f}"
    study_line = next(line for line in out.splitlines() if line.startswith("study "))
    # all 16 runs counted, the 4 finished ones included; the deterministic width-4 rate (and evaluation) from their records
    m = re.search(r"16 runs; at its file's 2 epochs: training (\S+) h \+ evaluation (\S+) h .*stage times: (\d+) from records, (\d+) probed; "
                  r"evaluation of 12 runs not measured: the median of the others", study_line)
    assert m and int(m.group(3)) == 4 and int(m.group(4)) == 3, out  # probed once per configuration: MIMO at widths 4 and 8, deterministic at 8
    train, evaluation = float(m.group(1)), float(m.group(2))
    # (each figure is printed to 2 decimals: the printed sum and the sum of printed parts differ by up to 0.0125)
    assert float(rows["1"][5]) == pytest.approx(train / 2 + evaluation, abs=0.013) and float(rows["2"][5]) == pytest.approx(train + evaluation, abs=0.013)
    assert "not finished: epochs-1 seed 0" in out and re.search(r"suggested epochs: 2 \(the smallest budget within 1 pp", out)


def test_the_rule_picks_the_smallest_flat_budget_that_fits_else_the_largest_that_fits() -> None:
    from benchmark.tools.learning_curve import choose

    rows = [{"epochs": e, "accuracy": a} for e, a in ((3, 70.0), (6, 75.0), (10, 78.5), (15, 79.2), (20, 79.4))]
    assert choose(rows, {3: 2.0, 6: 4.0, 10: 7.0, 15: 10.0, 20: 13.0}, 1.0, 8.0)[0] == 10
    epochs, why = choose(rows, {3: 2.0, 6: 4.0, 10: 9.0, 15: 12.0, 20: 15.0}, 1.0, 8.0)
    assert epochs == 6 and "not flat there: 4.40 pp below" in why and "the smallest flat budget, 10, needs 9.0 h" in why
    assert choose(rows, {3: 9.0, 6: 10.0, 10: 11.0, 15: 12.0, 20: 13.0}, 1.0, 8.0)[0] is None
    assert choose([{"epochs": 3, "accuracy": None}], None, 1.0, 8.0) == (None, "no budget of the curve is finished")


# two widths of the deterministic model, two seeds: the smallest study a cross-CPU repeat can join
CROSS = TINY_SUITE.split("[[runs]]")[0].replace('name = "tinybench"', 'name = "crossstudy"').replace("seeds = [0]", "seeds = [0, 1]")
for _w in (4, 8):
    CROSS += f'\n[[runs]]\nname = "deterministic-w{_w}"\nrun = {{ method = "deterministic" }}\nbackbone = {{ width = {_w} }}\n'


def test_cross_cpu_repeat_trains_one_cell_apart_from_the_study_once_per_cpu_kind(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    """The repeat refuses before the study's record exists and where that record is this CPU's own; on another kind it
    trains the suite's first cell at its first seed into cross-cpu/<kind>/ (never into the study's records), once; the
    study page lists the cell per CPU kind with the spread beside the seed SD, and its gaps ignore the repeat."""
    from benchmark.studies import cross_cpu_dir
    from benchmark.tools import cross_cpu

    root, _ = cifar10_dir
    suite = tmp_path / "crossstudy.toml"
    suite.write_text(CROSS)
    runs, ckpt = tmp_path / "ref" / "runs", tmp_path / "ckpt"
    common = ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(runs), "--checkpoint-dir", str(ckpt)]
    tool = [str(suite), *common, "--no-progress"]

    assert cross_cpu.main(tool) == 1 and "the study's own record is not finished" in capsys.readouterr().out
    assert cli.main(["bench", str(suite), *common, "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress", "--no-cost-pass"]) == 0
    capsys.readouterr()
    own = sorted((runs / "crossstudy").glob("*.json"))
    assert len(own) == 4
    # bench --plan's rates come from records of this kind of CPU only: another kind's would mislead by up to 3x
    import torch

    from benchmark.estimate import machine_kind, measured_by_key

    assert len(measured_by_key(runs, machine_kind(torch.device("cpu")))) == 2 and measured_by_key(runs, "Another CPU (avx9)") == {}
    assert cross_cpu.main(tool) == 0 and "ran on this kind of CPU" in capsys.readouterr().out  # the study's record is this CPU's

    monkeypatch.setattr(cross_cpu, "this_cpu_kind", lambda: "Another CPU (avx9)")
    assert cross_cpu.main(tool + ["--run", "nope"]) == 2 and "valid runs: deterministic-w4, deterministic-w8" in capsys.readouterr().err
    assert cross_cpu.main(tool + ["--seed", "7"]) == 2 and "valid seeds: 0, 1" in capsys.readouterr().err
    assert cross_cpu.main(tool + ["--plan"]) == 0 and "would train it again on Another CPU (avx9)" in capsys.readouterr().out
    assert not cross_cpu_dir(runs).exists()
    assert cross_cpu.main(tool) == 0
    out = capsys.readouterr().out
    assert "deterministic-w4 seed 0" in out and len(re.findall(r"train epoch 1/", out)) == 1  # one run trained
    [rep] = list((cross_cpu_dir(runs) / "another-cpu-avx9" / "crossstudy").glob("*.json"))
    assert sorted((runs / "crossstudy").glob("*.json")) == own  # the study's records untouched
    assert cross_cpu.main(tool) == 0 and "already repeated on Another CPU (avx9)" in capsys.readouterr().out

    # the repeat's record names the CPU it ran on: here the same machine, so say it ran on the other kind
    rec = json.loads(rep.read_text())
    rec["provenance"]["cpu"] = {"model": "Another CPU", "capability": {"avx9": True}}
    rep.write_text(json.dumps(rec))
    assert cli.main(["study", str(suite), "--results-dir", str(runs), "--leaderboard-dir", str(tmp_path / "boards"), "--no-plot"]) == 0
    capsys.readouterr()
    page = (tmp_path / "boards" / "crossstudy" / "study.md").read_text()
    table = page.split("### Cross-CPU repeats")[1].split("###")[0]
    lines = [line for line in table.splitlines() if line.startswith("| deterministic, width 4, seed 0")]
    assert len(lines) == 4 and "Another CPU (avx9)" in lines[1] and "(the study's record)" in lines[0]
    recs = {r["_path"]: r for r in load_records(runs / "crossstudy").records}
    own_acc = [100 * r["metrics"]["clean"]["accuracy"] for r in recs.values() if r["config"]["backbone"]["width"] == 4]
    own0 = next(100 * r["metrics"]["clean"]["accuracy"] for r in recs.values() if r["config"]["backbone"]["width"] == 4 and r["identity"]["seed"] == 0)
    spread = abs(100 * rec["metrics"]["clean"]["accuracy"] - own0)
    assert lines[2].split("|")[3].strip() == f"{spread:.2f}"
    assert lines[3].split("|")[3].strip() == f"{np.std(own_acc, ddof=1):.2f}"
    assert "Another CPU" not in page.split("### Seeds and devices per cell")[1]  # the repeat is no cell of the study


def test_the_plan_warns_when_its_probes_ran_on_a_busy_machine(monkeypatch) -> None:
    """Probed step times on a machine already running other work overstate an idle one's (the capacity plan read 1145 ms
    per width-16 step beside a running study, 258 ms idle): the plan says so, from the load average before the probes."""
    import os

    from benchmark import estimate

    assert estimate.busy_warning({"record": 0, "probe": 3, "load": 1.9, "cpus": 2.0}).startswith(
        "warning: the machine was busy before the probes (1-minute load average 1.9 on 2 CPUs)")
    assert estimate.busy_warning({"record": 0, "probe": 3, "load": 0.3, "cpus": 2.0}) is None  # idle
    assert estimate.busy_warning({"record": 5, "probe": 0, "load": 1.9, "cpus": 2.0}) is None  # nothing probed: rates from records
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    lines = estimate.format_estimates([], {**estimate._Estimator(estimate.Environment(device="cpu"), 4).counts, "probe": 1})
    assert lines[-1].startswith("warning: the machine was busy before the probes (1-minute load average 3.0 on ")


def test_a_study_without_records_of_your_own_points_to_the_published_ones(tmp_path: Path, capsys) -> None:
    """``study capacity`` on a fresh clone reads the user's own (empty) records; it says where the project's published
    records of the study are, and writes the page of what exists (nothing finished) all the same."""
    assert cli.main(["study", "capacity", "--results-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards"),
                     "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"study capacity along backbone\.width: 0 of \d+ runs finished\nnote: none of your own records in ", out), out
    assert "python -m benchmark study capacity --reference" in out
    assert "No finished records yet." in (tmp_path / "boards" / "capacity" / "study.md").read_text()
