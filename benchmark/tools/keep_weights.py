"""Keep the final weights of a suite's member runs: ``python -m benchmark.tools.keep_weights SUITE``.

A deep ensemble's members and a subnetwork ensemble's parent are other runs of the suite (in the
capacity study, its deterministic runs), whose final weights the ensemble loads from
``<checkpoint dir>/<run id>/final.pt``. The checkpoint folder is not versioned, so on another
machine such a member would be trained again. This tool finds every run that a run of SUITE uses
as a member (:func:`benchmark.sweep.plan.member_requests`), and for each one whose record is
complete and whose final weights are in the checkpoint folder, copies them into a store of kept
weights, ``<store>/<run id>/final.pt`` (the checkpoint folder's layout), which ``bench`` searches
after the checkpoint folder (``--weights-dir STORE``; with ``--reference`` the published store
``results/reference/weights``) before it trains a member.

Each file is copied atomically (a temporary file in the store's folder, then linked into place); a
kept file is never overwritten (one whose bytes differ from the checkpoint folder's is named and
left as it is). It prints what it kept, what was kept already, what is missing (the record is done
but the weights are not in this checkpoint folder: trained again on the next machine unless kept
from where they are) and the store's size for the suite. ``--dry-run`` copies nothing. Only member
runs are kept: no other run's weights are needed again. Not imported by the product.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.io import atomic_write
from ..core.runtime import DEFAULT_CHECKPOINTS, DEFAULT_RESULTS, DEFAULT_WEIGHTS, REFERENCE_RUNS, REFERENCE_WEIGHTS
from ..runner import completed_records, member_config, run_id_of
from ..studies import suite_cells


def member_runs(suite: str, results_dir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The suite's name and, run id -> resolved config, every run that a run of ``suite`` uses as a member, in the suite's order."""
    from ..sweep.plan import member_requests  # here: the sweep package imports submitit, which the GPU machine's software lacks

    cells = suite_cells(suite, results_dir)
    members: dict[str, dict[str, Any]] = {}
    for _, resolved in cells.cells:
        for overrides in member_requests(resolved):
            sub = member_config(resolved, overrides)
            members.setdefault(run_id_of(sub), sub)
    return cells.name, members


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def keep(suite: str, results_dir: Path, checkpoint_dir: Path, store: Path, dry_run: bool = False) -> dict[str, list[str]]:
    """Copy the final weights of ``suite``'s finished member runs from ``checkpoint_dir`` into ``store`` (never over
    a kept file), printing each; returns the run ids by outcome: kept, already, differs, missing, unfinished."""
    out: dict[str, list[str]] = {k: [] for k in ("kept", "already", "differs", "missing", "unfinished")}
    name, members = member_runs(suite, results_dir)
    copied = 0
    for run_id, sub in members.items():
        if not completed_records(results_dir, sub, run_id):
            out["unfinished"].append(run_id)
            continue
        src, dest = Path(checkpoint_dir) / run_id / "final.pt", Path(store) / run_id / "final.pt"
        if dest.is_file():
            if src.is_file() and not filecmp.cmp(src, dest, shallow=False):
                out["differs"].append(run_id)
                print(f"differs: {dest} is kept and {src} has other bytes; the kept file is left as it is")
            else:
                out["already"].append(run_id)
                print(f"already kept: {dest}")
        elif src.is_file():
            out["kept"].append(run_id)
            copied += src.stat().st_size
            if not dry_run:
                with open(src, "rb") as fh:
                    atomic_write(dest, lambda w: shutil.copyfileobj(fh, w), overwrite=False, size=src.stat().st_size)
            print(f"{'would keep' if dry_run else 'kept'}: {src} -> {dest} ({_size(src.stat().st_size)})")
        else:
            out["missing"].append(run_id)
            print(f"missing: {run_id}: its record is done but its final weights are not in {checkpoint_dir}: trained again on the "
                  f"next machine unless kept")
    total = sum((Path(store) / r / "final.pt").stat().st_size for r in members if (Path(store) / r / "final.pt").is_file())
    print(f"suite {name}: {len(members)} member runs; {len(out['kept'])} {'to keep' if dry_run else 'kept now'} ({_size(copied)}), "
          f"{len(out['already'])} kept already, {len(out['differs'])} differing (left as kept), {len(out['missing'])} missing here, "
          f"{len(out['unfinished'])} not finished (nothing to keep yet); the suite's kept weights in {store}: {_size(total)}"
          + (" (dry run: nothing copied)" if dry_run else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.keep_weights", description=__doc__.split("\n\n")[0])
    p.add_argument("suite", help="suite name (benchmark/suites/<name>.toml) or path, e.g. capacity")
    p.add_argument("--reference", action="store_true",
                   help=f"the published records ({REFERENCE_RUNS}) and store ({REFERENCE_WEIGHTS}) instead of your own")
    p.add_argument("--results-dir", type=Path, default=None, help=f"records to read (default: {DEFAULT_RESULTS}; with --reference: {REFERENCE_RUNS})")
    p.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS, help=f"where the final weights are (default: {DEFAULT_CHECKPOINTS})")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help=f"the store to fill (default: {DEFAULT_WEIGHTS}; with --reference: {REFERENCE_WEIGHTS})")
    p.add_argument("--dry-run", action="store_true", help="say what would be kept; copy nothing")
    args = p.parse_args(argv)
    results = args.results_dir or (REFERENCE_RUNS if args.reference else DEFAULT_RESULTS)
    store = args.weights_dir or (REFERENCE_WEIGHTS if args.reference else DEFAULT_WEIGHTS)
    try:
        keep(args.suite, results, args.checkpoint_dir, store, dry_run=args.dry_run)
    except C.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
