"""The GPU check (``make gpu-check``): its smoke mode runs every stage on the CPU, so the command
cannot rot between GPU draws; its parallel corrupted-set preparation writes what a run would."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.catalogue.checks import ALL_CHECKS, contract_task, run_checks
from benchmark.catalogue.methods import method_names

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("facts", "cuda-tests", "perf", "peers", "suite", "paper-epoch")


def test_smoke_check_runs_every_stage_and_packs_the_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PLURES_CACHE_DIR")}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "benchmark.tools.gpu_check", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert seconds < 200, f"the smoke check took {seconds:.0f}s"  # its budget is 170 s; 20 s on an idle 2-core machine
    # the summary comes last, one row per stage, none failed
    summary = proc.stdout[proc.stdout.rindex("# GPU check (smoke, CPU)"):]
    for stage in STAGES:
        row = next(line for line in summary.splitlines() if line.startswith(f"| {stage} |"))
        assert row.split("|")[2].strip() in ("ok", "partial", "skipped"), row
    assert "contract checks 54/54 passed" in summary or "passed on cpu" in summary
    assert "submitit imported: no" in summary
    assert "data preparation ok" in summary
    # what comes back: the archive, the summary and the log, few files
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["gpu-check.log", "gpu-check.tar.gz", "summary.md"]
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = set(tar.getnames())
    expected = {"facts.json", "cuda-tests.json", "contract.md", "logs/pytest-cuda.log", "logs/prep.log", "logs/gpu-check.log", "prep.json",
                "perf/perf-cpu-quick.json", "perf/perf-cpu-quick.md", "peers.json", "budget.json", "budget.md",
                "leaderboards/gpu/leaderboard.md", "paper-epoch.json", "paper-epoch.md", "summary.md"}
    assert {f"gpu-check/{n}" for n in expected} <= names, sorted(expected - {n.removeprefix("gpu-check/") for n in names})
    records = [n for n in names if n.startswith("gpu-check/records/gpu/") and n.endswith(".json")]
    assert len(records) == 2, records  # the smoke suite: deterministic and MIMO
    assert not any("/scratch/" in n for n in names)  # checkpoints, data and caches stay out


def test_parallel_preparation_writes_what_a_run_regenerates(tmp_path: Path) -> None:
    from benchmark.corruptions import corruption_set
    from benchmark.corruptions.generate import generate_cifar_c
    from benchmark.data.base import load_dataset
    from benchmark.tools.gpu_check import write_synthetic_copy
    from benchmark.tools.gpu_check_prep import prepare

    data_dir, cache = write_synthetic_copy(tmp_path / "data", 1, 1), tmp_path / "cache"
    ev = {"corruption_severities": [2], "corruption_subset": 0}
    status = prepare("cifar10-jpeg", str(data_dir), str(cache), ev, workers=2, log=lambda m: None)
    assert status["same_folder"] and status["generated"] == 15
    data = load_dataset("cifar10-jpeg", str(data_dir), str(cache), progress=False)
    serial = generate_cifar_c(np.array(data.test.images), np.asarray(data.test.labels), tmp_path / "serial",
                              corruptions=corruption_set("benchmark15"), severities=(2,), progress=False)
    for c in corruption_set("benchmark15"):
        assert np.array_equal(np.load(Path(status["folder"]) / f"{c}.npy"), np.load(serial / f"{c}.npy")), c


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", method_names())
def test_contract_checks_on_cuda(name: str) -> None:
    failed = [r for r in run_checks(name, contract_task(), checks=ALL_CHECKS, device="cuda") if not r.passed]
    assert not failed, failed
