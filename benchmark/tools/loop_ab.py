"""Two checkouts' training steps inside the real loop, interleaved: ``python -m benchmark.tools.loop_ab``.

``make perf`` and ``profile_step`` time a step on its own; this times it where it runs, in
``python -m benchmark bench``: the same rows of a suite, shortened (``--epochs`` epochs on
``--train-subset`` images, evaluation cut to a subset of the clean test set, no corrupted or OOD
sets, no cost pass), run from checkout A and from checkout B in turn, ``--repeats`` rounds, the order
alternating (A B, B A, A B, ...) so that a drift of the machine's speed hits both sides alike. Each
run writes its records into a fresh folder; the table comes from the records' training history:

- the **steady-state step**: an epoch's seconds less its first step's, over its other steps (the first
  step compiles, where the row compiles; it is reported apart, as ``first step s``);
- per row and training stage, the median over the rounds of each side and their ratio A / B (above
  1: B is faster).

Both sides use this interpreter (``sys.executable``) with the checkout as the working folder, so
``python -m benchmark`` imports each checkout's own code; they share ``--cache-dir`` (the decoded
data). Writes ``<out>/<name>.{json,md}``; the runs' records stay in ``--work`` (a temporary folder by
default, removed afterwards). The numbers are measurements of this machine at the time; nothing in a
test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..core.cpu import cpu_model
from ..core.io import atomic_write_json, atomic_write_text
from ..records import git_state, utc_now

SIDES = ("A", "B")
SHORTEN = ["--set", "eval.test_subset=1000", "--set", "eval.corruptions=none", "--set", "eval.ood=[]", "--set", "eval.latency_repeats=1"]


def order(round_index: int) -> tuple[str, str]:
    """The sides' order in round ``round_index`` (0-based): A B, then B A, alternating."""
    return SIDES if round_index % 2 == 0 else SIDES[::-1]


def bench_command(suite: str, rows: list[str], epochs: int, train_subset: int, work: Path, data_dir: str | None, cache_dir: Path,
                  extra_sets: list[str]) -> list[str]:
    """The shortened ``bench`` command one side runs, its records under ``work``."""
    cmd = [sys.executable, "-m", "benchmark", "bench", suite, "--only", ",".join(rows), "--set", f"train.epochs={epochs}",
           "--set", f"data.train_subset={train_subset}", *SHORTEN]
    for s in extra_sets:
        cmd += ["--set", s]
    cmd += ["--results-dir", str(work / "runs"), "--checkpoint-dir", str(work / "checkpoints"), "--leaderboard-dir", str(work / "boards"),
            "--cache-dir", str(cache_dir), "--no-cost-pass", "--no-progress"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return cmd


def steady_steps(record: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Per training stage of a record: each epoch's steady-state ms per step, first-step seconds and seconds."""
    cfg = record["config"]
    batch = int(cfg["train"]["batch_size"])
    images = cfg.get("data", {}).get("train_subset")
    out: dict[str, list[dict[str, float]]] = {}
    for stage, epochs in record.get("training", {}).get("history", {}).items():
        label = stage.split("-")[0] if stage.count("-") >= 4 else stage  # a member run's id: its method
        for e in epochs:
            steps = int(images) // batch if images else int(e["rows"]) // batch
            if steps < 2:
                raise ValueError(f"{record['run_id']} stage {stage}: {steps} step(s) per epoch; the steady state needs at least 2 "
                                 f"(raise --train-subset above 2 x train.batch_size = {2 * batch})")
            out.setdefault(label, []).append({"ms_per_step": (e["seconds"] - e["first_step_seconds"]) / (steps - 1) * 1000,
                                              "first_step_s": e["first_step_seconds"], "epoch_s": e["seconds"], "steps": steps})
    return out


def collect(work: Path) -> dict[str, dict[str, list[dict[str, float]]]]:
    """``{row: {stage: [epoch, ...]}}`` from the completed records under ``work``."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for path in sorted((work / "runs").rglob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "completed" or "-K=" in record.get("run_id", ""):  # an evaluated variant shares its run's training
            continue
        name = record["config"]["run"].get("name") or record["config"]["run"]["method"]
        for stage, epochs in steady_steps(record).items():
            rows.setdefault(name, {}).setdefault(stage, []).extend(epochs)
    return rows


def git_commit(checkout: Path) -> str | None:
    """``checkout``'s short commit, ``+changes`` when it differs from it (:func:`benchmark.records.git_state`)."""
    state = git_state(checkout)
    if not state["git_commit"]:
        return None
    return state["git_commit"][:7] + ("+changes" if state["git_dirty"] else "")


def summarise(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row and stage: each side's per-round steady ms/step (median over the round's epochs), their medians and A / B."""
    keys: list[tuple[str, str]] = []
    for r in rounds:
        for side in SIDES:
            for row, stages in r[side].items():
                keys += [(row, st) for st in stages if (row, st) not in keys]
    table = []
    for row, stage in keys:
        entry: dict[str, Any] = {"row": row, "stage": stage}
        for side in SIDES:
            per_round = [statistics.median(e["ms_per_step"] for e in r[side][row][stage]) for r in rounds if stage in r[side].get(row, {})]
            first = [r[side][row][stage][0]["first_step_s"] for r in rounds if stage in r[side].get(row, {})]
            entry[side] = {"ms_per_step": per_round, "median_ms_per_step": statistics.median(per_round) if per_round else None,
                           "first_step_s": first}
        a, b = entry["A"]["median_ms_per_step"], entry["B"]["median_ms_per_step"]
        entry["a_over_b"] = a / b if a and b else None
        table.append(entry)
    return table


def render(result: dict[str, Any]) -> str:
    """The record as Markdown (rounding only here)."""
    lines = [f"# Training steps inside the real loop: {result['label_a']} (A) against {result['label_b']} (B)", "",
             f"CPU: {result['cpu_model']}; {result['rounds']} rounds, the sides alternating (A B, B A, ...); each side runs `bench "
             f"{result['suite']}` for the rows {', '.join(result['rows'])}, {result['epochs']} epoch(s) on {result['train_subset']:,} training "
             f"images, evaluation on 1,000 test images, no corrupted or OOD sets, no cost pass. Generated {result['created']}.", "",
             f"A: `{result['a']['path']}` at {result['a']['commit']}; B: `{result['b']['path']}` at {result['b']['commit']}.", "",
             f"Command: `{result['command']}`", "",
             "Steady-state step: an epoch's seconds less its first step's, over its other steps; per side the median of the rounds "
             "(each round's value in brackets). First step: each round's, in seconds (compilation, where the row compiles, happens there).", "",
             "| row | stage | A ms/step | B ms/step | A / B | A first step s | B first step s |", "|---|---|---:|---:|---:|---|---|"]
    for e in result["table"]:
        def cell(side: str) -> str:
            v = e[side]
            if v["median_ms_per_step"] is None:
                return "-"
            return f"{v['median_ms_per_step']:.1f} [{', '.join(f'{x:.1f}' for x in v['ms_per_step'])}]"
        firsts = lambda side: ", ".join(f"{x:.1f}" for x in e[side]["first_step_s"]) or "-"  # noqa: E731
        ratio = f"{e['a_over_b']:.3f}" if e["a_over_b"] else "-"
        lines.append(f"| {e['row']} | {e['stage']} | {cell('A')} | {cell('B')} | {ratio} | {firsts('A')} | {firsts('B')} |")
    failed = [f"{r['side']} round {r['round'] + 1}: exit status {r['status']}" for r in result["runs"] if r["status"] != 0]
    if failed:
        lines += ["", "Runs that failed (their completed records still count): " + "; ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.loop_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="checkout A (e.g. a worktree at the previous commit)")
    p.add_argument("--b", type=Path, default=Path("."), help="checkout B (default: this one)")
    p.add_argument("--label-a", default="A", help="A's name in the table")
    p.add_argument("--label-b", default="B", help="B's name in the table")
    p.add_argument("--suite", default="quick", help="suite name or path, as each checkout resolves it (default quick)")
    p.add_argument("--rows", default="deterministic,mimo", help="comma-separated row names of the suite (default deterministic,mimo)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    p.add_argument("--train-subset", type=int, default=20000, help="training images per run (default 20000)")
    p.add_argument("--repeats", type=int, default=3, help="rounds (each runs A and B once; default 3)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="TABLE.KEY=VALUE", help="a further override of both sides' runs")
    p.add_argument("--data-dir", default=None, help="passed to both sides (default: python -m benchmark's rule)")
    p.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="the decoded-data cache both sides share (default data/cache)")
    p.add_argument("--work", type=Path, default=None, help="keep the runs' records here (default: a temporary folder, removed)")
    p.add_argument("--name", default="loop-ab", help="output file stem (default loop-ab)")
    p.add_argument("--out", type=Path, default=Path("results/perf"))
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    for side, path in checkouts.items():
        if not (path / "benchmark" / "__main__.py").is_file():
            raise SystemExit(f"loop_ab: --{side.lower()} {path} is not a plures checkout (no benchmark/__main__.py there)")
    if args.repeats < 1 or args.epochs < 1:
        raise SystemExit(f"loop_ab: --repeats {args.repeats} and --epochs {args.epochs} must be at least 1")
    log: Callable[[str], None] = lambda m: print(m, flush=True)  # noqa: E731
    cache = args.cache_dir.resolve()
    holder = tempfile.TemporaryDirectory(prefix="loop-ab-") if args.work is None else None
    work = Path(holder.name) if holder is not None else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.repeats):
            got: dict[str, Any] = {}
            for side in order(i):
                folder = work / f"{side}-{i + 1}"
                cmd = bench_command(args.suite, rows, args.epochs, args.train_subset, folder, args.data_dir, cache, args.sets)
                start = time.monotonic()
                with open(work / f"{side}-{i + 1}.log", "w") as fh:
                    status = subprocess.run(cmd, cwd=checkouts[side], stdout=fh, stderr=subprocess.STDOUT).returncode
                seconds = time.monotonic() - start
                runs.append({"side": side, "round": i, "status": status, "seconds": seconds})
                got[side] = collect(folder)
                log(f"round {i + 1} {side}: exit status {status}, {seconds:.0f} s, rows {sorted(got[side])}")
            rounds.append(got)
    finally:
        if holder is not None:
            holder.cleanup()
    command = "python -m benchmark.tools.loop_ab" + "".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = {"created": utc_now(), "command": command, "cpu_model": cpu_model(), "suite": args.suite, "rows": rows, "epochs": args.epochs,
              "train_subset": args.train_subset, "rounds": args.repeats, "sets": args.sets, "label_a": args.label_a, "label_b": args.label_b,
              "a": {"path": str(args.a), "commit": git_commit(checkouts["A"])}, "b": {"path": str(args.b), "commit": git_commit(checkouts["B"])},
              "runs": runs, "per_round": rounds, "table": summarise(rounds)}
    atomic_write_json(args.out / f"{args.name}.json", result)
    atomic_write_text(args.out / f"{args.name}.md", render(result))
    log(f"wrote {args.out / (args.name + '.md')} and .json")
    return 0 if all(r["status"] == 0 for r in runs) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
