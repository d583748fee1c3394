"""The interleaved cost pass: a tiny suite of every method benched, then every model measured
together; the leaderboard takes those latencies and says so; the order is interleaved; missing
weights name the run and the path; the ensemble-cheaper-than-its-member check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark import cli
from benchmark.cost_pass import load_models, measure_interleaved, suite_records
from benchmark.data.base import load_dataset
from benchmark.evaluation.evaluate import evaluate
from benchmark.leaderboard import load_boards
from benchmark.leaderboard.costs import attach_cost_pass, cheaper_than_member, latency_facts, record_latency
from benchmark.leaderboard.render import render_markdown
from tests.conftest import write_cifar_archive

SUITE = """
name = "tinycost"
seeds = [0]

[defaults.run]
dataset = "cifar10"
backbone = "resnet8"

[defaults.backbone]
width = 4

[defaults.train]
epochs = 1
batch_size = 50
lr = 0.05
warmup_epochs = 0.5

[defaults.eval]
batch_size = 100
latency_batch = 8
latency_repeats = 1

[[runs]]
name = "deterministic"
run = { method = "deterministic" }

[[runs]]
name = "mimo"
run = { method = "mimo" }
method = { members = 2, batch_repetition = 1 }

[[runs]]
name = "batchensemble"
run = { method = "batchensemble" }
method = { members = 2 }

[[runs]]
name = "mc_dropout"
run = { method = "mc_dropout" }
method = { samples = [1, 2] }

[[runs]]
name = "deep_ensemble"
run = { method = "deep_ensemble" }
method = { members = 2 }

[[runs]]
name = "subnetwork"
run = { method = "subnetwork" }
method = { members = 2 }
"""

MODELS = 7  # deterministic, mimo, batchensemble, mc_dropout K=1 and K=2, deep ensemble, subnetwork


@pytest.fixture(scope="module")
def benched(tmp_path_factory) -> dict:
    """A tiny suite benched once (every method; the cost pass at the end, 2 repeats)."""
    tmp = tmp_path_factory.mktemp("costpass")
    write_cifar_archive(tmp / "data", "cifar10", per_batch=40, as_tar=False)
    suite = tmp / "tinycost.toml"
    suite.write_text(SUITE)
    env = ["--data-dir", str(tmp / "data"), "--cache-dir", str(tmp / "cache"), "--results-dir", str(tmp / "runs"),
           "--checkpoint-dir", str(tmp / "ckpt"), "--no-progress", "--cost-repeats", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["bench", str(suite), "--leaderboard-dir", str(tmp / "boards"), *env]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"tmp": tmp, "suite": suite, "env": env}


def test_bench_measures_every_model_and_the_leaderboard_says_so(benched) -> None:
    tmp = benched["tmp"]
    records = suite_records(tmp / "runs", "tinycost")
    assert len(records) == MODELS
    cost = json.loads((tmp / "cost" / "tinycost.json").read_text())  # 'cost' beside the results folder
    assert cost["suite"] == "tinycost" and cost["repeats"] == 2 and cost["threads"] >= 1 and cost["torch"] == torch.__version__
    assert sorted(cost["models_measured_together"]) == sorted(r["run_id"] for r in records)
    by_id = {m["run_id"]: m for m in cost["models"]}
    for rec in records:
        m = by_id[rec["run_id"]]
        assert m["record_created"] == rec["created"] and m["identity"] == rec["identity"]
        assert m["forward_passes"] == rec["cost"]["forward_passes"]  # the same variant as the record's
        for field, batch in (("ms_per_example_b1", 1), ("ms_per_example_large", 8)):
            s = m[field]
            assert s["batch_size"] == batch and len(s["samples"]) == 2 and s["min"] <= s["median"] <= s["max"] and s["min"] > 0
    # the leaderboard: the cost pass's medians, and a note saying where they come from
    [board] = load_boards(tmp / "runs", ["tinycost"], warn=False)
    [block] = board.blocks
    assert set(block.frame["latency_source"]) == {"interleaved"}
    for _, row in block.frame.iterrows():
        m = by_id[row["run_id"]]
        assert row["ms_b1"] == m["ms_per_example_b1"]["median"] and row["ms_large"] == m["ms_per_example_large"]["median"]
    text = (tmp / "boards" / "tinycost" / "leaderboard.md").read_text()
    assert f"latency from the interleaved cost pass of {cost['created'][:10]}" in text
    assert f"{MODELS} of {MODELS} records; {MODELS} models measured together" in text and "median of 2 interleaved repeats" in text
    assert "per-run figure" not in text


def test_rebuilt_models_are_the_evaluated_ones(benched) -> None:
    """Independent check of the rebuild: each network the pass loads gives its record's clean accuracy and NLL."""
    tmp = benched["tmp"]
    records = suite_records(tmp / "runs", "tinycost")
    models = load_models(records, tmp / "ckpt", data_dir=tmp / "data", cache_dir=tmp / "cache", log=lambda m: None)
    data = load_dataset("cifar10", tmp / "data", tmp / "cache", download=False, progress=False)
    test = data.test.on_device(data.mean, data.std, "cpu")
    for m in models:
        if m.record["identity"]["method"] == "mc_dropout":  # stochastic at test time: its masks are drawn per call
            continue
        clean = evaluate(m.net, test, 100, m.precision, m.channels_last, progress=False)
        want = m.record["metrics"]["clean"]
        assert clean["accuracy"] == want["accuracy"] and clean["nll"] == pytest.approx(want["nll"], rel=1e-5), m.key


def test_cost_command_interleaves_round_robin(benched, capsys) -> None:
    tmp = benched["tmp"]
    records = suite_records(tmp / "runs", "tinycost")
    models = load_models(records, tmp / "ckpt", data_dir=tmp / "data", cache_dir=tmp / "cache", log=lambda m: None)
    calls: list[tuple[str, int]] = []
    handles = [m.net.register_forward_pre_hook(lambda mod, args, key=m.key: calls.append((key, args[0].shape[0]))) for m in models]
    try:
        out = measure_interleaved(models, repeats=3, warmup=1, calls_b1=2, log=lambda m: None)
    finally:
        for h in handles:
            h.remove()
    keys = [m.key for m in models]
    n = len(keys)
    expected = []
    for batch, calls_per in ((1, 2), (8, 1)):
        rounds = [keys] + [keys[r % n:] + keys[: r % n] for r in range(3)]  # warm-up, then the rotated rounds
        expected += [(k, batch) for rnd in rounds for k in rnd for _ in range(calls_per)]
    assert calls == expected
    assert all(len(out[k]["ms_per_example_b1"]["samples"]) == 3 for k in keys)
    # the command itself, with --results-dir / --checkpoint-dir / --cost-dir
    cost_dir = tmp / "cost2"
    assert cli.main(["cost", str(benched["suite"]), *benched["env"], "--cost-dir", str(cost_dir), "--no-leaderboard"]) == 0
    cost = json.loads((cost_dir / "tinycost.json").read_text())
    assert len(cost["models"]) == MODELS
    [board] = load_boards(tmp / "runs", ["tinycost"], warn=False, cost_dir=cost_dir)
    [block] = board.blocks
    assert sorted(block.frame["ms_b1"]) == sorted(m["ms_per_example_b1"]["median"] for m in cost["models"])
    assert dict(block.facts)["Latency"].startswith(f"latency from the interleaved cost pass of {cost['created'][:10]}")
    capsys.readouterr()


def test_missing_checkpoint_names_the_run_and_the_path(benched, tmp_path: Path, capsys) -> None:
    tmp = benched["tmp"]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tmp / "ckpt", ckpt)
    rec = next(r for r in suite_records(tmp / "runs", "tinycost") if r["identity"]["method"] == "mimo")
    expected = ckpt / rec["training_run_id"] / "final.pt"
    expected.unlink()
    env = [a if a != str(tmp / "ckpt") else str(ckpt) for a in benched["env"]]
    assert cli.main(["cost", "tinycost", *env, "--cost-dir", str(tmp_path / "cost"), "--no-leaderboard"]) == 2
    err = capsys.readouterr().err
    assert f"run {rec['run_id']}" in err and str(expected) in err and "--checkpoint-dir" in err
    assert not (tmp_path / "cost").exists()  # nothing measured, nothing written
    # --skip-missing measures the others and names the one left out, which keeps its per-run figure
    assert cli.main(["cost", "tinycost", *env, "--cost-dir", str(tmp_path / "cost"), "--no-leaderboard", "--skip-missing", "--cost-repeats", "2"]) == 0
    out = capsys.readouterr().out
    [line] = [m for m in out.splitlines() if "left out" in m]  # one line, however many are missing: a count, an example, the remedy
    assert line == (f"cost pass: 1 of {MODELS} model(s) left out, their final weights not under {ckpt} (e.g. {expected}); they keep their "
                    f"per-run latency (or their earlier pass's figures). To time them, train them in this checkout or pass the "
                    f"--checkpoint-dir they were trained with")
    cost = json.loads((tmp_path / "cost" / "tinycost.json").read_text())
    assert len(cost["models"]) == MODELS - 1 and cost["left_out"] == [{"run_id": rec["run_id"], "expected": str(expected)}]
    [board] = load_boards(tmp / "runs", ["tinycost"], warn=False, cost_dir=tmp_path / "cost")
    latency = dict(board.blocks[0].facts)["Latency"]
    assert f"({MODELS - 1} of {MODELS} records;" in latency and latency.endswith(f"for: mimo {rec['identity']['variant']}")


# ------------------------------------------------------------------------------------------------
# the leaderboard's reading and its check, on records made here


def _rec(method: str, members: int, b1: tuple[float, float, float], flops: float, created: str = "2026-01-01T00:00:00.000000Z") -> dict:
    spread = {"median": b1[1], "min": b1[0], "max": b1[2], "batch_size": 1}
    return {"run_id": f"{method}-{members}", "created": created, "identity": {"suite": "s", "dataset": "d", "backbone": "b", "method": method,
            "variant": f"M={members}" if members > 1 else "", "members": members, "seed": 0},
            "cost": {"flops_per_example": flops, "ms_per_example_b1": spread, "ms_per_example_large": {**spread, "batch_size": 8}}}


def test_ensemble_cheaper_than_its_member_is_flagged() -> None:
    det = _rec("deterministic", 1, (1.6, 1.75, 1.9), 100)
    below = _rec("deep_ensemble", 2, (1.3, 1.45, 1.5), 200)  # slowest repeat faster than the member's fastest
    overlapping = _rec("batchensemble", 2, (1.5, 1.7, 1.8), 200)  # below in median, within the spread
    fewer_flops = _rec("subnetwork", 4, (0.5, 0.6, 0.7), 30)  # cheaper, and its FLOPs say why
    flags = cheaper_than_member([det, below, overlapping, fewer_flops])
    assert len(flags) == 2 and all(f.startswith("deep_ensemble M=2 (seed 0) measured") for f in flags)  # batch 1 and the large batch
    assert "measured at different times (per-run vs per-run figure)" in flags[0] and "2x its FLOPs" in flags[0]
    facts = dict(latency_facts(None, [det, below, overlapping, fewer_flops]))
    assert facts["Latency"].startswith("per-run figure") and "deep_ensemble M=2" in facts["Latency check"]


def test_cost_pass_applies_only_to_the_record_it_measured(tmp_path: Path) -> None:
    det, ens = _rec("deterministic", 1, (1.6, 1.75, 1.9), 100), _rec("deep_ensemble", 2, (1.3, 1.45, 1.5), 200)
    entry = {"ms_per_example_b1": {"median": 3.0, "min": 2.9, "max": 3.2, "batch_size": 1},
             "ms_per_example_large": {"median": 0.4, "min": 0.3, "max": 0.5, "batch_size": 8}}
    data = {"kind": "plures-cost-pass", "version": 1, "suite": "s", "created": "2026-11-29T00:00:00.000000Z", "repeats": 5,
            "models": [{"run_id": det["run_id"], "record_created": det["created"], **entry},
                       {"run_id": ens["run_id"], "record_created": "2025-01-01T00:00:00.000000Z", **entry}]}  # an older record of that run
    (tmp_path / "s.json").write_text(json.dumps(data))
    attach_cost_pass([det, ens], tmp_path)
    assert record_latency(det)["ms_per_example_b1"]["median"] == 3.0
    assert record_latency(ens)["ms_per_example_b1"]["median"] == 1.45  # not the record measured: keeps its per-run figure
    text = dict(latency_facts(None, [det, ens]))["Latency"]
    assert text.startswith("latency from the interleaved cost pass of 2026-11-29") and "(1 of 2 records" in text
    assert text.endswith("per-run figure (each run measured alone at the end of its evaluation, at different times; not strictly "
                         "comparable across rows) for: deep_ensemble M=2")
    [flag] = cheaper_than_member([det, ens])  # batch 1 only (at the large batch the ensemble is the slower)
    assert "at batch 1" in flag and "measured at different times (per-run vs interleaved figure)" in flag
