"""Stores of kept final weights: nothing trains twice across machines. A deep ensemble's members are the
suite's deterministic runs; ``python -m benchmark.tools.keep_weights`` copies their final weights into a
store, and on a fresh machine (an empty checkpoint folder, only the committed deterministic records)
``bench --weights-dir STORE`` plans them as reused and runs the ensemble without training an epoch, to
the same record; ``--reference`` searches the published store; the tool never overwrites a kept file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path


from benchmark import cli
from benchmark.core.runtime import REFERENCE_WEIGHTS, Environment
from benchmark.cost_pass import load_models, missing_checkpoints
from benchmark.records import load_records
from benchmark.runner import find_final_weights
from benchmark.tools import keep_weights
from test_iterating import TINY_SUITE

# the tiny bench suite's defaults (tiny CIFAR-10, ResNet-8 width 4) at 1 epoch: deterministic seeds 0 and 1, and the deep
# ensemble M=2 at seed 0, whose members are those two runs
SUITE = (TINY_SUITE.split("[[runs]]")[0].replace('name = "tinybench"', 'name = "keepbench"').replace("epochs = 2", "epochs = 1") + """
[[runs]]
name = "deterministic"
run = { method = "deterministic" }
seeds = [0, 1]

[[runs]]
name = "deep_ensemble"
run = { method = "deep_ensemble" }
method = { members = 2 }
""")


def _final(folder: Path, run_id: str) -> Path:
    return folder / run_id / "final.pt"


def test_final_weights_are_found_in_the_checkpoint_folder_first_then_each_store_in_order(tmp_path: Path) -> None:
    ckpt, first, second = tmp_path / "ckpt", tmp_path / "first", tmp_path / "second"
    env = Environment(checkpoint_dir=ckpt, weights_dirs=(first, second))
    assert find_final_weights(env, "r") is None
    for folder in (second, first, ckpt):
        _final(folder, "r").parent.mkdir(parents=True)
        _final(folder, "r").write_bytes(b"w")
        assert find_final_weights(env, "r") == _final(folder, "r")
    assert find_final_weights([second, first], "r") == _final(second, "r")  # the folders themselves, in the order given


def test_reference_searches_the_published_store_after_the_given_ones(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()

    def stores(*argv: str) -> tuple[Path, ...]:
        return cli.make_env(parser.parse_args(["bench", "quick", *argv])).weights_dirs

    assert stores() == () and stores("--reference") == ()  # the published store is searched only when it exists
    REFERENCE_WEIGHTS.mkdir(parents=True)
    assert stores("--reference") == (REFERENCE_WEIGHTS,)
    assert stores("--weights-dir", "a", "--weights-dir", "b", "--reference") == (Path("a"), Path("b"), REFERENCE_WEIGHTS)
    assert stores("--weights-dir", "a") == (Path("a"),)
    assert parser.parse_args(["run", "--weights-dir", "a"]).weights_dirs == [Path("a")]


def test_kept_member_weights_are_reused_on_a_fresh_machine(cifar10_dir, tmp_path: Path, capsys) -> None:
    root, _ = cifar10_dir
    suite = tmp_path / "keepbench.toml"
    suite.write_text(SUITE)
    a, b, store = tmp_path / "ckpt-a", tmp_path / "ckpt-b", tmp_path / "store"
    runs_a, runs_b = tmp_path / "runs-a", tmp_path / "runs-b"

    def bench(runs: Path, ckpt: Path, *more: str) -> list[str]:
        return ["bench", str(suite), "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(runs),
                "--checkpoint-dir", str(ckpt), "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress", "--no-cost-pass", "--resamples", "20", *more]

    # the first machine: the deterministic runs, then the ensemble reusing them
    assert cli.main(bench(runs_a, a)) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"train epoch 1/1", out)) == 2 and len(re.findall(r"reusing trained member", out)) == 2
    recs = {p: json.loads(p.read_text()) for p in (runs_a / "keepbench").glob("*.json")}
    det = {r["identity"]["seed"]: r["training_run_id"] for r in recs.values() if r["identity"]["method"] == "deterministic"}
    [ensemble] = [r for r in recs.values() if r["identity"]["method"] == "deep_ensemble"]
    assert sorted(det) == [0, 1] and all(_final(a, rid).is_file() for rid in det.values())

    # keep the members' weights: only theirs (not the ensemble's), byte for byte
    assert keep_weights.main([str(suite), "--results-dir", str(runs_a), "--checkpoint-dir", str(a), "--weights-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^kept: ", out, re.M)) == 2, out
    assert "suite keepbench: 2 member runs; 2 kept now" in out
    assert sorted(p.name for p in store.iterdir()) == sorted(det.values())
    assert all(_final(store, rid).read_bytes() == _final(a, rid).read_bytes() for rid in det.values())
    kept = {rid: (_final(store, rid).stat().st_mtime_ns, _final(store, rid).read_bytes()) for rid in det.values()}

    # the fresh machine: an empty checkpoint folder and the deterministic records only
    shutil.copytree(runs_a, runs_b)
    for p, r in recs.items():
        if r["identity"]["method"] != "deterministic":
            (runs_b / "keepbench" / p.name).unlink()
    assert cli.main(bench(runs_b, b, "--plan")) == 0  # without the store: the members are trained again, and said so
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 2 done (skipped), 0 to resume from a checkpoint, 1 to start")
    assert "its record is done but its final weights are not in the checkpoint folder: trained again" in out
    assert cli.main(bench(runs_b, b, "--weights-dir", str(store), "--plan")) == 0
    out = capsys.readouterr().out
    assert re.search(rf"member deterministic seed 0 0 s \[its final weights exist \(kept in {re.escape(str(store))}\): reused\]; "
                     rf"member deterministic seed 1 0 s \[same source\]", out), out
    assert "trained again" not in out

    assert cli.main(bench(runs_b, b, "--weights-dir", str(store))) == 0
    out = capsys.readouterr().out
    assert "train epoch" not in out  # nothing trained
    for rid in det.values():
        assert f"reusing trained member {rid} from {_final(store, rid)}" in out
        assert not (b / rid).exists()  # nothing of the members written on this machine
    assert {rid: (_final(store, rid).stat().st_mtime_ns, _final(store, rid).read_bytes()) for rid in det.values()} == kept  # the store is read only
    [again] = [json.loads(p.read_text()) for p in (runs_b / "keepbench").glob("*.json")
               if json.loads(p.read_text())["identity"]["method"] == "deep_ensemble"]
    assert again["training_run_id"] == ensemble["training_run_id"]
    assert again["metrics"] == ensemble["metrics"]

    # the cost pass finds the kept weights too (the ensemble's own in this machine's checkpoint folder)
    records = load_records(runs_b / "keepbench").records
    assert missing_checkpoints(records, b) and not missing_checkpoints(records, b, [store])
    models = load_models(records, b, data_dir=root, cache_dir=tmp_path / "cache", log=lambda m: None, weights_dirs=[store])
    assert sorted(str(m.checkpoint) for m in models) == sorted([str(_final(b, ensemble["training_run_id"]))]
                                                              + [str(_final(store, rid)) for rid in det.values()])

    # the tool never overwrites: kept already; a kept file with other bytes is named and left; a dry run copies nothing
    assert keep_weights.main([str(suite), "--results-dir", str(runs_a), "--checkpoint-dir", str(a), "--weights-dir", str(store)]) == 0
    assert len(re.findall(r"^already kept: ", capsys.readouterr().out, re.M)) == 2
    _final(store, det[1]).write_bytes(b"other bytes")
    assert keep_weights.main([str(suite), "--results-dir", str(runs_a), "--checkpoint-dir", str(a), "--weights-dir", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"differs: {_final(store, det[1])} is kept and {_final(a, det[1])} has other bytes; the kept file is left as it is" in out
    assert _final(store, det[1]).read_bytes() == b"other bytes"
    assert keep_weights.main([str(suite), "--results-dir", str(runs_a), "--checkpoint-dir", str(a), "--weights-dir", str(tmp_path / "dry"),
                              "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^would keep: ", out, re.M)) == 2 and not (tmp_path / "dry").exists()
    # a checkpoint folder without the members' weights: named as missing, trained again on the next machine unless kept
    assert keep_weights.main([str(suite), "--results-dir", str(runs_b), "--checkpoint-dir", str(b), "--weights-dir", str(tmp_path / "s2")]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^missing: .*: trained again on the next machine unless kept$", out, re.M)) == 2, out


def test_keep_weights_names_the_valid_suites(capsys) -> None:
    assert keep_weights.main(["no-such-suite"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown suite 'no-such-suite'; valid choices: " in err and "capacity" in err
