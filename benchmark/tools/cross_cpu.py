"""One cell of a study trained again on this machine's kind of CPU: ``python -m benchmark.tools.cross_cpu SUITE``.

fp32 training does not reproduce across CPU instruction sets (the quick suite's deterministic model:
75.18% on an AVX2 EPYC, 74.73% on an AVX-512 EPYC, 75.43% on a Zen 4, seed 0 each), so a study that
runs over several sessions on whatever machine each one gets mixes CPU kinds. To tell that spread
from the seed-to-seed one, each kind of CPU the study meets trains one cell again: by default the
suite's first run at its first seed (the capacity study: ``deterministic-w8`` seed 0, the cheapest).

The repeat is an ordinary ``bench`` run of that cell, written apart from the study's own records:
``<results dir>/../cross-cpu/<cpu kind>/<suite>/`` (with ``--reference``:
``results/reference/cross-cpu/...``), checkpoints under ``<checkpoint dir>/cross-cpu/<cpu kind>``.
It is idempotent as every run is: done on this kind, it is skipped; interrupted, it resumes. Nothing
is trained when the study's own record of the cell already ran on this kind of CPU, or when that
record does not exist yet (run the study first: its record is what the repeat is compared with).
``python -m benchmark study SUITE`` then lists the cell per CPU kind, with the spread across kinds
beside the cell's seed standard deviation (its "Cross-CPU repeats" table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..core import config as C
from ..core.runtime import DEFAULT_RESULTS, REFERENCE_RUNS
from ..estimate import machine_kind
from ..leaderboard.study import device_kind
from ..runner import completed_records, run_id_of
from ..studies import cross_cpu_dir, cross_cpu_slug, load_record_files, suite_cells


def this_cpu_kind() -> str:
    """This machine's kind of CPU as a study names a CPU run's device (model and vector instruction sets)."""
    import torch

    return machine_kind(torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.cross_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("suite", help="the study's suite (name or path), e.g. capacity")
    p.add_argument("--run", default=None, help="the run (a [[runs]] name) to repeat (default: the suite's first)")
    p.add_argument("--seed", type=int, default=None, help="its seed (default: the run's first seed)")
    p.add_argument("--reference", action="store_true", help=f"the published records ({REFERENCE_RUNS}) and their cross-cpu folder")
    p.add_argument("--results-dir", type=Path, default=None, help=f"the study's records (default: {DEFAULT_RESULTS}; with --reference: {REFERENCE_RUNS})")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("results/checkpoints"), help="checkpoint root (default: results/checkpoints)")
    p.add_argument("--data-dir", default=None, help="data root (default: $PLURES_DATA_DIR, else ./data)")
    p.add_argument("--cache-dir", default=None, help="decoded-data cache (default: $PLURES_CACHE_DIR, else ./data/cache)")
    p.add_argument("--plan", action="store_true", help="say what would be done; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    results = args.results_dir or (REFERENCE_RUNS if args.reference else DEFAULT_RESULTS)
    try:
        cells = suite_cells(args.suite, results)
        names = list(dict.fromkeys(res["run"]["name"] for _, res in cells.cells))
        name = args.run or names[0]
        if name not in names:
            raise C.ConfigError(f"--run {name!r} is not a run of suite {cells.name}; valid runs: {', '.join(names)}")
        seeds = [int(res["run"]["seed"]) for _, res in cells.cells if res["run"]["name"] == name]
        seed = seeds[0] if args.seed is None else args.seed
        if seed not in seeds:
            raise C.ConfigError(f"--seed {seed} is not a seed of run {name} in suite {cells.name}; valid seeds: {', '.join(map(str, seeds))}")
    except C.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    label, res = next((lab, r) for lab, r in cells.cells if r["run"]["name"] == name and int(r["run"]["seed"]) == seed)
    run_id = run_id_of(res)
    kind = this_cpu_kind()
    own = completed_records(results, res, run_id)
    if not own:
        print(f"{label}: the study's own record is not finished in {results / cells.name}; run the study first "
              f"(python -m benchmark bench {args.suite}{' --reference' if args.reference else ''}): the repeat is compared with it")
        return 1
    own_kind = device_kind(load_record_files(own[:1])[0])
    if own_kind == kind:
        print(f"{label}: the study's own record ran on this kind of CPU ({kind}); nothing to repeat here")
        return 0
    target = cross_cpu_dir(results) / cross_cpu_slug(kind)
    done = completed_records(target, res, run_id)
    if done:
        print(f"{label}: already repeated on {kind}: {done[0]}")
        return 0
    print(f"{label} (run {run_id}): the study's record ran on {own_kind}; {'would train' if args.plan else 'training'} it again on "
          f"{kind} into {target}", flush=True)
    if args.plan:
        return 0
    from ..cli import main as cli_main

    with tempfile.TemporaryDirectory() as boards:
        bench = ["bench", args.suite, "--only", name, "--seeds", str(seed), "--results-dir", str(target),
                 "--checkpoint-dir", str(args.checkpoint_dir / "cross-cpu" / cross_cpu_slug(kind)), "--leaderboard-dir", boards,
                 "--no-cost-pass", "--device", "cpu"]
        bench += [a for k, v in (("--data-dir", args.data_dir), ("--cache-dir", args.cache_dir)) if v for a in (k, v)]
        bench += ["--no-progress"] if args.no_progress else []
        return cli_main(bench)


if __name__ == "__main__":
    sys.exit(main())
