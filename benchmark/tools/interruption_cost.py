"""What an interruption costs: ``python -m benchmark.tools.interruption_cost --data-dir DIR``.

Runs a short real bench (the deterministic model and MIMO M=3 on a training subset of the CIFAR-10
JPEG copy, a few epochs, no corrupted sets) as separate ``python -m benchmark bench`` processes and
times, against the same bench run straight through:

- ``again``: the finished bench run again (every run is done: nothing is trained);
- ``sigterm``: a SIGTERM (Ctrl-C, a scheduler's preemption) a few seconds into MIMO's second epoch,
  then the same command again (the run resumes at the step it stopped at);
- ``sigkill``: a SIGKILL (a node failure, the OOM killer) at the same point, then the same command
  again (the run resumes from its last epoch checkpoint: the steps since then are trained again).

Each scenario starts from empty results and checkpoint folders (the decoded-data cache is shared and
warmed first). Writes ``results/perf/interruption-cost.{md,json}``: wall seconds, the extra seconds
over the straight bench, and what the resumed run said it resumed from. Not imported by the product.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_json, atomic_write_text
from ..core.cpu import cpu_model

SUITE = """
name = "interruption"
description = "a short real bench for timing interruptions (not a benchmark result)"
seeds = [0]
[defaults.run]
dataset = "cifar10-jpeg"
backbone = "resnet8"
[defaults.backbone]
width = 16
[defaults.train]
epochs = {epochs}
batch_size = 256
lr = 0.4
warmup_epochs = 1.0
schedule = "linear"
precision = "fp32"
[defaults.data]
train_subset = {subset}
[defaults.eval]
test_subset = 1000
corruptions = "none"
latency_repeats = 1
predictions = false
[[runs]]
name = "deterministic"
run = {{ method = "deterministic" }}
[[runs]]
name = "mimo"
run = {{ method = "mimo" }}
method = {{ members = 3, input_repetition = 0.0, batch_repetition = 1 }}
"""


def bench(work: Path, suite: Path, data_dir: str, cache_dir: str, sig: int | None = None, delay: float = 0.0) -> tuple[float, str]:
    """One ``bench`` process in ``work`` (its results and checkpoint folders); with ``sig``, sent ``delay``
    seconds after MIMO's first epoch ends. Returns (wall seconds, output)."""
    argv = [sys.executable, "-m", "benchmark", "bench", str(suite), "--data-dir", data_dir, "--cache-dir", cache_dir, "--results-dir",
            str(work / "runs"), "--checkpoint-dir", str(work / "ckpt"), "--leaderboard-dir", str(work / "boards"), "--no-progress",
            "--no-cost-pass"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[2])
    out = []
    for line in proc.stdout:
        out.append(line)
        if sig is not None and re.match(r"mimo-\S+ train epoch 1/", line):
            time.sleep(delay)
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate()
    return time.perf_counter() - t0, "".join(out) + rest


def resumed_from(output: str) -> str:
    """What the bench said MIMO would do when it started (done / resume from ... / start), without paths."""
    m = re.search(r"^  mimo seed 0: (.*)$", output, re.M)
    if not m:
        return "?"
    return "done: skipped" if m.group(1).startswith("done") else re.sub(r" \(/\S+\)$", "", m.group(1))


def epochs_trained(output: str) -> int:
    """Training epochs completed in a bench's output (one log line per epoch of every run)."""
    return len(re.findall(r"^\S+ train epoch \d+/\d+:", output, re.M))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.interruption_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("PLURES_DATA_DIR"), help="the data root with the CIFAR-10 JPEG copy")
    p.add_argument("--cache-dir", default=os.environ.get("PLURES_CACHE_DIR", "data/cache"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=10000, help="training images (default 10000)")
    p.add_argument("--delay", type=float, default=3.0, help="seconds into MIMO's second epoch at which the signal comes (default 3)")
    p.add_argument("--out", type=Path, default=Path("results/perf"))
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("--data-dir (or $PLURES_DATA_DIR) is required")
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        suite = root / "interruption.toml"
        suite.write_text(SUITE.format(epochs=args.epochs, subset=args.subset))

        def fresh(name: str) -> Path:
            work = root / name
            shutil.rmtree(work, ignore_errors=True)
            return work

        bench(fresh("warm"), suite, args.data_dir, args.cache_dir)  # decode the data into the cache once
        straight, out = bench(fresh("straight"), suite, args.data_dir, args.cache_dir)
        base_epochs = epochs_trained(out)
        again, out = bench(root / "straight", suite, args.data_dir, args.cache_dir)
        rows.append({"scenario": "uninterrupted", "wall_s": straight, "extra_s": 0.0, "epochs": base_epochs, "mimo": "start"})
        rows.append({"scenario": "finished bench run again", "wall_s": again, "extra_s": again, "epochs": epochs_trained(out),
                     "mimo": resumed_from(out)})
        for name, sig in (("SIGTERM, then the same command", signal.SIGTERM), ("SIGKILL, then the same command", signal.SIGKILL)):
            work = fresh(name.split(",")[0])
            first, out1 = bench(work, suite, args.data_dir, args.cache_dir, sig=sig, delay=args.delay)
            second, out2 = bench(work, suite, args.data_dir, args.cache_dir)
            rows.append({"scenario": name, "wall_s": first + second, "extra_s": first + second - straight,
                         "epochs": epochs_trained(out1) + epochs_trained(out2), "mimo": resumed_from(out2)})
            print(f"{name}: {first:.1f} s + {second:.1f} s; mimo: {resumed_from(out2)}", flush=True)
    facts = {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
             "epochs": args.epochs, "train_subset": args.subset, "delay_s": args.delay,
             "command": "python -m benchmark.tools.interruption_cost " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "interruption-cost.json", {**facts, "rows": rows})
    lines = ["# What an interruption costs", "",
             f"A real bench of the deterministic model and MIMO M=3 (ResNet-8 width 16, {args.epochs} epochs on {args.subset:,} "
             f"CIFAR-10 JPEG training images, 1,000 test images, no corrupted sets), each scenario a separate `bench` process "
             f"from empty results and checkpoint folders; the signal comes {args.delay:g} s into MIMO's second epoch.", "",
             f"CPU: {facts['cpu_model']} ({facts['cpus']} logical CPUs; 1-minute load average {load_before[0]:.2f} before, "
             f"{facts['load_average_1min_before_after'][1]:.2f} after). Command: `{facts['command']}`.", "",
             "Epochs completed counts the training epochs the processes finished in all (an epoch stopped part-way and "
             "resumed at its step counts once; one restarted from its start after a SIGKILL counts once too, its lost steps "
             "being the cost); wall seconds depend on what else the machine was doing.", "",
             "| scenario | wall s | extra s over uninterrupted | epochs completed | MIMO on the next start |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['scenario']} | {r['wall_s']:.1f} | {r['extra_s']:+.1f} | {r['epochs']} | {r['mimo']} |" for r in rows]
    atomic_write_text(args.out / "interruption-cost.md", "\n".join(lines) + "\n")
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
