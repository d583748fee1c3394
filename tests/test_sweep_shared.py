"""Two sweeps over one results and checkpoint folder (their own log folders), launched at once on a
real local SLURM cluster (marker ``slurm``), both holding the deterministic seed-0 run: the run is
trained once. The other sweep's task skips it (its record exists), finds its lock held and trains
nothing (running elsewhere), or finds it finished meanwhile; both sweeps then show it done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")

from benchmark import sweep as S
from benchmark.records import load_records
from tests.test_sweep import _slurm_sweep, _until, data_dir  # noqa: F401  (data_dir: the tiny CIFAR fixture)

EPOCHS = 3


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_two_sweeps_over_one_results_folder_train_each_run_once(slurm_cluster: Any, tmp_path: Path, data_dir: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    sweeps = []
    for name in ("first", "second"):
        path = _slurm_sweep(tmp_path, data_dir, 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', slurm_cluster, name=name,
                            extra=f'[grid]\n"train.epochs" = [{EPOCHS}]')
        path.write_text(path.read_text().replace(f'log_dir = "{tmp_path / "logs"}"', f'log_dir = "{tmp_path / ("logs-" + name)}"'))
        sweeps.append(S.load_sweep(path))
    assert sweeps[0].paths["log_dir"] != sweeps[1].paths["log_dir"] and sweeps[0].paths["results_dir"] == sweeps[1].paths["results_dir"]
    (task,) = S.expand(sweeps[0])
    assert [t.run_id for t in S.expand(sweeps[1])] == [task.run_id]
    repo = Path(__file__).resolve().parent.parent
    launches = [subprocess.Popen([sys.executable, "-m", "benchmark", "sweep", str(s.path)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for s in sweeps]
    outcomes = [(p.wait(timeout=180), p.stdout.read(), p.stderr.read()) for p in launches]
    assert [rc for rc, _, _ in outcomes] == [0, 0], outcomes
    for s in sweeps:  # each sweep's run and its leaderboard job end
        _until(lambda s=s: [r.state for r in S.status(s)] == ["done"] and S.report(s)[1].state == "done", 240, f"sweep {s.name} done")
    logs = [Path(json.loads(S.manifest_path(s).read_text())["runs"][task.run_id]["stdout"]) for s in sweeps]
    _until(lambda: all("Exiting after successful completion" in p.read_text() for p in logs), 60, "both tasks ending")
    texts = [p.read_text() for p in logs]
    assert sum(t.count(f"train epoch 1/{EPOCHS}:") for t in texts) == 1, texts  # trained once
    assert sum(t.count(f"train epoch {EPOCHS}/{EPOCHS}:") for t in texts) == 1, texts
    other = next(t for t in texts if f"train epoch 1/{EPOCHS}:" not in t)
    assert any(m in other for m in ("done: completed record", "another process holds the run's lock; this task trains nothing",
                                    "finished in another process meanwhile")), other
    (rec,) = load_records(Path(sweeps[0].paths["results_dir"]), include_failed=True).records  # one record, completed
    assert rec["status"] == "completed" and rec["training_run_id"] == task.run_id
    for s in sweeps:
        capsys.readouterr()
        assert main(["sweep-status", str(s.path)]) == 0
        out = capsys.readouterr().out
        assert "1 done" in out and "leaderboard done" in out, out
