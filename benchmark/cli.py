"""Command line: ``python -m benchmark {run,bench,study,cost,leaderboard,list,check-method} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from .core import config as C
from .core.runtime import DEFAULT_RESULTS, REFERENCE_ROOT, REFERENCE_RUNS, REFERENCE_WEIGHTS

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


def add_env_options(p: argparse.ArgumentParser, reference: bool = False) -> None:
    g = p.add_argument_group("where data and results live")
    g.add_argument("--data-dir", help="data root (default: $PLURES_DATA_DIR, else ./data)")
    g.add_argument("--cache-dir", help="decoded-data cache (default: $PLURES_CACHE_DIR, else ./data/cache)")
    g.add_argument("--results-dir", type=Path, default=None,
                   help=f"where records are written (default: {DEFAULT_RESULTS}; with --reference: {REFERENCE_RUNS})")
    g.add_argument("--checkpoint-dir", type=Path, default=Path("results/checkpoints"), help="checkpoints and final weights (default: results/checkpoints)")
    g.add_argument("--weights-dir", dest="weights_dirs", type=Path, action="append", default=[], metavar="DIR",
                   help="a read-only store of kept final weights (DIR/<run id>/final.pt, as python -m benchmark.tools.keep_weights "
                        "writes it), searched for a run's final weights after the checkpoint folder: a member run (a deep ensemble's "
                        "member, a subnetwork ensemble's parent) found there is loaded, not trained again, and the cost pass measures "
                        "it; nothing is written into it (repeatable, searched in order"
                        + (f"; with --reference, {REFERENCE_WEIGHTS} is searched last when it exists)" if reference else ")"))
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    g.add_argument("--restart", action="store_true",
                   help="train anew even when a completed record or a checkpoint of the run exists (by default a run skips when it is "
                        "done and resumes from its checkpoint); nothing finished is deleted: the new weights and record replace them "
                        "when complete")
    g.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # resuming is the default; accepted for old scripts
    if reference:
        g.add_argument("--reference", action="store_true",
                       help=f"the project's published records: read and write {REFERENCE_ROOT} (records, cost passes, leaderboards) "
                            f"instead of your own {DEFAULT_RESULTS.parent}/{{runs,cost,leaderboards}}; only on purpose")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when not on a terminal)")
    g.add_argument("--tensorboard-dir", type=Path, default=None,
                   help="with train.log=tensorboard: event files in DIR/<run id>/<stage> (default: <checkpoint dir>/<run id>/tensorboard/<stage>)")


def resolve_result_dirs(args: argparse.Namespace) -> None:
    """Fill ``results_dir`` (and ``leaderboard_dir`` where the command has one) from ``--reference``:
    the published records under results/reference, else the user's own (the cost passes live beside
    the records: ``<root>/cost``)."""
    root = REFERENCE_ROOT if getattr(args, "reference", False) else DEFAULT_RESULTS.parent
    if getattr(args, "results_dir", None) is None:
        args.results_dir = root / "runs"
    if hasattr(args, "leaderboard_dir") and args.leaderboard_dir is None:
        args.leaderboard_dir = root / "leaderboards"


def weights_stores(args: argparse.Namespace) -> tuple[Path, ...]:
    """The stores of kept final weights a command searches: each ``--weights-dir`` in order, then with ``--reference``
    the published one (:data:`REFERENCE_WEIGHTS`) when it exists."""
    stores = list(getattr(args, "weights_dirs", None) or [])
    if getattr(args, "reference", False) and REFERENCE_WEIGHTS.is_dir() and REFERENCE_WEIGHTS not in stores:
        stores.append(REFERENCE_WEIGHTS)
    return tuple(stores)


def make_env(args: argparse.Namespace):
    from .core.runtime import Environment

    resolve_result_dirs(args)
    env = Environment(data_dir=args.data_dir, cache_dir=args.cache_dir, results_dir=args.results_dir, checkpoint_dir=args.checkpoint_dir,
                      weights_dirs=weights_stores(args), device=args.device, restart=args.restart, progress=not args.no_progress,
                      log=lambda m: print(m, flush=True))
    if getattr(args, "tensorboard_dir", None) is not None:
        env.tensorboard_dir = args.tensorboard_dir  # read by the runner's training stages (train.log = "tensorboard")
    return env


@command("run")
def cmd_run(p: argparse.ArgumentParser):
    """Train and evaluate one method x dataset x seed from a config file; writes one record per evaluated variant."""
    p.add_argument("config", nargs="?", help="a run config (.toml); omit to use only --set values and the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 --set method.members=3 (repeatable)")
    p.add_argument("--from-suite", metavar="SUITE:NAME",
                   help="start from a suite entry's settings (its defaults and entry, at the suite's first seed), e.g. quick:mimo; "
                        "the config file and --set apply on top; the run's suite stays 'adhoc' unless --set run.suite=...")
    add_env_options(p)

    def run(args: argparse.Namespace) -> int:
        from .runner import run_experiment

        cfg = C.suite_entry(args.from_suite) if args.from_suite else {}
        if args.config:
            cfg = C.merge(cfg, C.load_toml(args.config))
        cfg = C.apply_overrides(cfg, args.overrides)
        print(resolved_line(cfg), flush=True)
        run_experiment(cfg, make_env(args))
        return 0

    return run


def resolved_line(cfg: dict) -> str:
    """What a ``run`` will train, with the values it takes from the defaults named (so a default backbone is never a surprise)."""
    res = C.resolve(cfg)
    given = cfg.get("run", {})
    r = res["run"]
    parts = [f"{key} {r[key]}" + ("" if key in given else " (default)") for key in ("method", "dataset", "backbone")]
    width = res["backbone"].get("width")
    return (f"run: {', '.join(parts)}{f', width {width}' if width is not None else ''}, seed {r['seed']}, suite {r['suite']}"
            + ("; the suites use resnet8: --set run.backbone=resnet8 or --from-suite quick:NAME" if "backbone" not in given else ""))


def suite_namespace(name: str, overrides: list[str]) -> str:
    """Where a bench's records, cost pass and leaderboard go: the suite's name, or with ``--set``
    overrides ``<name>+<hash of the overrides>`` (a differently configured bench never mixes its
    records with the suite's own)."""
    if not overrides:
        return name
    import hashlib
    import json

    parsed = C.apply_overrides({}, overrides)
    return f"{name}+{hashlib.sha256(json.dumps(parsed, sort_keys=True).encode()).hexdigest()[:8]}"


@command("bench")
def cmd_bench(p: argparse.ArgumentParser):
    """Run a named suite end to end (every run x seed), then rebuild its leaderboard. Each run decides from disk: a run
    with a completed record is skipped, one with a checkpoint resumes, the others start (--restart trains them anew).
    With --set overrides the records go to their own namespace <suite>+<hash>, never beside the suite's own."""
    p.add_argument("suite", nargs="?", default="quick", help="suite name (benchmark/suites/<name>.toml) or path (default: quick)")
    p.add_argument("--only", default="", help="comma-separated run names of the suite to run (default: all)")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...",
                   help="run the suite's runs at these seeds instead of the suite's own (e.g. 0,1,2; the same namespace: a seed is part "
                        "of a run's identity, finished seeds are skipped)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override for every run (repeatable); the records go to the namespace <suite>+<hash of the overrides>")
    p.add_argument("--leaderboard-dir", type=Path, default=None,
                   help="where leaderboards go (default: results/leaderboards; with --reference: results/reference/leaderboards)")
    p.add_argument("--skip-done", action="store_true", help=argparse.SUPPRESS)  # skipping finished runs is the default
    add_cost_options(p)
    add_resamples_option(p)
    p.add_argument("--no-cost-pass", action="store_true", help="skip the interleaved cost pass after the runs (latency columns keep the per-run figures)")
    p.add_argument("--plan", action="store_true",
                   help="run nothing: print each run's state (done / resume / start) and the hours left, from the step times of finished "
                        "records of the same configuration at another seed, else a short probe of the training step; each figure's source named")
    add_env_options(p, reference=True)

    def run(args: argparse.Namespace) -> int:
        from .leaderboard import write_leaderboards
        from .runner import check_runs, run_experiment, run_state

        meta, runs = C.load_suite(args.suite, seeds=args.seeds)
        names = [r["run"]["name"] for r in runs]
        only = [s for s in args.only.split(",") if s]
        unknown_names = sorted(set(only) - set(names))
        if unknown_names:
            raise C.ConfigError(f"unknown run name(s) {unknown_names} in suite {meta['name']!r}; valid choices: {', '.join(sorted(set(names)))}")
        namespace = suite_namespace(meta["name"], args.overrides)
        chosen = [r for r in runs if not only or r["run"]["name"] in only]
        label = [f"{cfg['run']['name']} seed {cfg['run']['seed']}" for cfg in chosen]
        selected = []
        for name, r in zip(label, chosen):
            try:
                selected.append(C.merge(C.apply_overrides(r, args.overrides), {"run": {"suite": namespace}}))
            except C.ConfigError as exc:  # a --set that no run accepts: the same for every run, said once
                raise C.ConfigError(f"{exc} (in run {name}); nothing was run") from None
        resolved = check_runs(list(zip(label, selected)))  # every run checked before anything trains; every problem listed
        env = make_env(args)
        if namespace != meta["name"]:
            print(f"bench {meta['name']} with {' '.join('--set ' + o for o in args.overrides)}: its records, cost pass and leaderboard "
                  f"go to the namespace {namespace} (the suite's own records are not touched)", flush=True)
        states = [run_state(r, env) for r in resolved]
        counts = {a: sum(st.action == a for st in states) for a in ("skip", "resume", "start")}
        print(f"bench {namespace}: {len(selected)} runs in {args.results_dir / namespace}: {counts['skip']} done (skipped), "
              f"{counts['resume']} to resume from a checkpoint, {counts['start']} to start", flush=True)
        if args.plan:  # each run's state with what it has left and where the figure comes from; nothing runs
            from .estimate import estimate_runs, format_estimates

            print("\n".join(format_estimates(*estimate_runs(list(zip(label, resolved)), env))), flush=True)
            return 0
        for name, st in zip(label, states):
            print(f"  {name}: {st.describe()}", flush=True)
        t0 = time.perf_counter()
        failed = []
        for i, (cfg, name) in enumerate(zip(selected, label), 1):
            print(f"[{i}/{len(selected)}] {name} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)
            try:
                run_experiment(cfg, env)
            except Exception as exc:  # a failed run is recorded; the suite goes on
                from .core.runtime import StopRequested

                if isinstance(exc, StopRequested):
                    print(f"bench {namespace} interrupted; run the same command again to continue it: finished runs are skipped, "
                          f"the interrupted one resumes from its checkpoint", file=sys.stderr, flush=True)
                    raise
                failed.append((cfg["run"]["name"], f"{type(exc).__name__}: {exc}"))
        print(f"suite {namespace}: {len(selected)} runs in {time.perf_counter() - t0:.0f}s", flush=True)
        if not args.no_cost_pass:
            bench_cost_pass(namespace, args)
        written = write_leaderboards(args.results_dir, args.leaderboard_dir, suites=[namespace], cost_dir=args.cost_dir,
                                     n_resamples=args.resamples, reference_dir=None if args.reference else REFERENCE_RUNS)
        for path in written:
            print(f"leaderboard: {path}")
        for name, err in failed:
            print(f"FAILED {name}: {err}", file=sys.stderr)
        return 1 if failed else 0

    return run


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers >= 0, e.g. 0,1,2; got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must be distinct integers >= 0, e.g. 0,1,2; got {text!r}")
    return seeds


def add_resamples_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resamples", type=_positive_int, default=1000,
                   help="resamples of the leaderboard's paired bootstrap (default: 1000)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resamples must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--resamples must be a positive integer, got {value}")
    return value


def add_cost_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the interleaved cost pass")
    g.add_argument("--cost-dir", type=Path, default=None, help="where cost passes are written and read (default: 'cost' beside --results-dir, i.e. results/cost)")
    g.add_argument("--cost-repeats", type=int, default=5, help="interleaved repeats per model and batch size (default: 5; at least 2)")


def bench_cost_pass(suite: str, args: argparse.Namespace) -> None:
    """The cost pass at the end of a bench; a failure is reported and the leaderboard keeps the per-run latencies."""
    from .cost_pass import run_cost_pass
    from .leaderboard.costs import default_cost_dir

    try:
        run_cost_pass(suite, args.results_dir, args.checkpoint_dir, args.cost_dir or default_cost_dir(args.results_dir), data_dir=args.data_dir,
                      cache_dir=args.cache_dir, device=args.device, repeats=args.cost_repeats, skip_missing=True, log=lambda m: print(m, flush=True),
                      weights_dirs=weights_stores(args))
    except Exception as exc:  # noqa: BLE001 - the runs' records stand; only the latency columns lose the interleaved figures
        print(f"warning: cost pass of suite {suite} failed ({type(exc).__name__}: {exc}); latency columns keep the per-run figures",
              file=sys.stderr, flush=True)


@command("study")
def cmd_study(p: argparse.ArgumentParser):
    """A study along one config axis from the records of a suite's (or sweep's) runs, e.g. capacity: each method's gap to the
    deterministic model against the width, paired by seed, with t intervals over seeds, the slope per doubling and DEE; writes
    <leaderboard dir>/<suite>/study.{md,csv,png,svg}. Cells without a finished record are listed as not finished."""
    p.add_argument("suite", nargs="?", help="suite name or path whose runs are the cells (as bench runs them)")
    p.add_argument("--sweep", type=Path, default=None, help="a sweep file instead of a suite: its runs, grid points included, are the "
                                                            "cells (records read from, and the study written beside, its [paths])")
    p.add_argument("--axis", default=None, help="the config key the study runs along, e.g. backbone.width (default: the one backbone option "
                                                "that differs between the cells)")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S,S,...", help="the seeds the suite was benched at (bench --seeds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="the overrides the suite was benched with (bench --set): its namespace <suite>+<hash>")
    p.add_argument("--results-dir", type=Path, default=None, help=f"records to read (default: {DEFAULT_RESULTS}; with --reference: {REFERENCE_RUNS})")
    p.add_argument("--leaderboard-dir", type=Path, default=None,
                   help="output folder (default: results/leaderboards; with --reference: results/reference/leaderboards)")
    p.add_argument("--reference", action="store_true", help=f"the project's published records ({REFERENCE_ROOT}) instead of your own")
    p.add_argument("--no-plot", action="store_true", help="the tables only")

    def run(args: argparse.Namespace) -> int:
        from .studies import suite_cells, sweep_cells, write_cells_study

        if (args.suite is None) == (args.sweep is None):
            raise C.ConfigError("study: give a suite (e.g. python -m benchmark study capacity) or --sweep FILE, not both")
        if args.sweep is not None:
            cells = sweep_cells(args.sweep)
            out = Path(C.load_toml(args.sweep).get("paths", {}).get("leaderboard_dir") or "results/leaderboards")
        else:
            resolve_result_dirs(args)
            name = C.load_suite(args.suite)[0]["name"]
            cells = suite_cells(args.suite, args.results_dir, args.seeds, suite_namespace(name, args.overrides))
            out = args.leaderboard_dir
        how = (f"python -m benchmark study {args.suite if args.sweep is None else f'--sweep {args.sweep}'}"
               + "".join(f" --set {o}" for o in args.overrides) + (" --reference" if args.reference else ""))
        study, paths = write_cells_study(cells, out, args.axis, how, plot=not args.no_plot)
        done = len(cells.cells) - len(study.missing)
        print(f"study {cells.name} along {study.axis}: {done} of {len(cells.cells)} runs finished", flush=True)
        if done == 0 and args.sweep is None and not args.reference and (REFERENCE_RUNS / cells.name).is_dir():
            print(f"note: none of your own records in {args.results_dir}; the project's published records of this study: "
                  f"python -m benchmark study {args.suite} --reference", flush=True)
        for path in paths:
            print(f"study: {path}")
        return 0

    return run


@command("cost")
def cmd_cost(p: argparse.ArgumentParser):
    """Measure every final model of a suite's records together, interleaved (median of repeats with min-max, batch 1 and the large
    batch), write <cost dir>/<suite>.json and rebuild the suite's leaderboard, whose latency columns then use these figures."""
    p.add_argument("suite", help="suite name (or its .toml file) whose records to measure")
    p.add_argument("--leaderboard-dir", type=Path, default=None,
                   help="where the suite's leaderboard is rebuilt (default: results/leaderboards; with --reference: results/reference/leaderboards)")
    p.add_argument("--no-leaderboard", action="store_true", help="only write the cost pass")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out (and name) records whose final weights are missing instead of failing; they keep their per-run latency")
    add_cost_options(p)
    add_resamples_option(p)
    add_env_options(p, reference=True)

    def run(args: argparse.Namespace) -> int:
        from .cost_pass import run_cost_pass, suite_name
        from .leaderboard import write_leaderboards
        from .leaderboard.costs import default_cost_dir

        resolve_result_dirs(args)
        suite = suite_name(args.suite)
        run_cost_pass(suite, args.results_dir, args.checkpoint_dir, args.cost_dir or default_cost_dir(args.results_dir), data_dir=args.data_dir,
                      cache_dir=args.cache_dir, device=args.device, repeats=args.cost_repeats, skip_missing=args.skip_missing,
                      log=lambda m: print(m, flush=True), weights_dirs=weights_stores(args))
        if not args.no_leaderboard:
            for path in write_leaderboards(args.results_dir, args.leaderboard_dir, suites=[suite], cost_dir=args.cost_dir,
                                          n_resamples=args.resamples, reference_dir=None if args.reference else REFERENCE_RUNS):
                print(f"leaderboard: {path}")
        return 0

    return run


@command("leaderboard")
def cmd_leaderboard(p: argparse.ArgumentParser):
    """Rebuild leaderboards (tables, plots, page) from the run records; a pure function of the records. Your own boards
    show each row beside the published reference record of the same suite, with the difference."""
    p.add_argument("--results-dir", type=Path, default=None, help=f"records to read (default: {DEFAULT_RESULTS}; with --reference: {REFERENCE_RUNS})")
    p.add_argument("--leaderboard-dir", "--out", dest="leaderboard_dir", type=Path, default=None,
                   help="output folder (default: results/leaderboards; with --reference: results/reference/leaderboards)")
    p.add_argument("--suite", action="append", default=[], help="only these suites (repeatable; default: all)")
    p.add_argument("--cost-dir", type=Path, default=None, help="interleaved cost passes to read (default: 'cost' beside --results-dir)")
    p.add_argument("--reference", action="store_true", help=f"the project's published records ({REFERENCE_ROOT}) instead of your own")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help=f"published records to compare your rows with (default: {REFERENCE_RUNS}; none with --reference)")
    add_resamples_option(p)

    def run(args: argparse.Namespace) -> int:
        from .leaderboard import write_leaderboards
        from .leaderboard.write import check_arguments, check_reference_dir

        resolve_result_dirs(args)
        check_arguments(args.results_dir, args.suite or None)  # a missing folder or a suite without records: exit 2
        reference_dir = None if args.reference else check_reference_dir(args.reference_dir) or REFERENCE_RUNS
        for path in write_leaderboards(args.results_dir, args.leaderboard_dir, suites=args.suite or None, cost_dir=args.cost_dir,
                                       n_resamples=args.resamples, reference_dir=reference_dir):
            print(f"leaderboard: {path}")
        return 0

    return run


def _shown(name: str) -> str:
    from .catalogue.plugins import plugin_of

    plugin = plugin_of(name)
    return f"{name} [plug-in {plugin.module}]" if plugin else name


def _option_lines(docs: list, indent: str = "    ") -> list[str]:
    """``name: type = default  help`` lines, aligned."""
    heads = [f"{d.name}: {d.type} = {d.default!r}" for d in docs]
    width = max((len(h) for h in heads), default=0)
    return [f"{indent}{h:<{width}}  {d.help}".rstrip() for h, d in zip(heads, docs)]


def describe_method(name: str) -> list[str]:
    """A method's one-line description and its options (type, default, help)."""
    from .catalogue.methods import get_method

    cls = get_method(name)
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # the docstring's first paragraph
    lines = [f"method {_shown(name)}: {doc}".rstrip(": "), "  options (--set method.KEY=VALUE):"]
    return lines + (_option_lines(C.describe_options(cls.Options)) or ["    (none)"])


def describe_backbone(name: str) -> list[str]:
    """A backbone's description, input size and options with defaults (and their choices)."""
    from .backbones import BACKBONES

    spec = BACKBONES.get(name)
    opts = ", ".join(f"{k} = {v!r}" + (f" (one of {', '.join(spec.choices[k])})" if k in spec.choices else "")
                     for k, v in spec.options.items()) or "(none)"
    return [f"backbone {name}: {spec.description or '(no description)'}", f"  input size: {spec.input_size}x{spec.input_size}",
            f"  options (--set backbone.KEY=VALUE): {opts}"]


def describe_dataset(name: str) -> list[str]:
    """A dataset's facts: description, source, corrupted-set kinds, profile, mCE reference, OOD use."""
    from .data.base import dataset_spec

    spec = dataset_spec(name)
    kinds = sorted(spec.corrupted or {})
    corrupted = ", ".join(f"{k} ({spec.corrupted[k]})" for k in kinds) if kinds else "none"
    if "official" in kinds and spec.official_corrupted_folder:
        corrupted += f"; the released set in <data root>/{spec.official_corrupted_folder}/ (or a folder path)"
    mce = spec.mce_reference.label if spec.mce_reference else "the block's deterministic runs"
    return [f"dataset {name}: {spec.description}", f"  source: {spec.source}", f"  eval.corruptions: none, {corrupted}",
            f"  corruption profile: {spec.corruption_profile}; mCE relative to: {mce}",
            f"  OOD use: {'its test split may serve as an eval.ood set' if spec.ood else 'not usable as an eval.ood set'}"]


def describe_section(name: str) -> list[str]:
    """A config table's keys with type, default and help."""
    return [f"config table [{name}] (--set {name}.KEY=VALUE):", *_option_lines(C.describe_options(C.SECTIONS[name]), "  ")]


def describe(name: str) -> list[str]:
    """What ``describe NAME`` prints: a method, backbone, dataset, OOD set or config table; else an error listing them."""
    from .backbones import BACKBONES
    from .catalogue.methods import method_names
    from .data.base import DATASETS, OOD_SETS, load_datasets
    from .core.registry import UnknownNameError

    load_datasets()
    if name in C.SECTIONS:
        return describe_section(name)
    if name in method_names():
        return describe_method(name)
    if name in BACKBONES:
        return describe_backbone(name)
    if name in DATASETS:
        return describe_dataset(name)
    if name in OOD_SETS:
        return [f"OOD set {name}: {OOD_SETS.get(name).description}", "  OOD use: an eval.ood set only (not trainable)"]
    names = [*method_names(), *BACKBONES.names(), *DATASETS.names(), *OOD_SETS.names(), *C.SECTIONS]
    raise UnknownNameError(f"unknown name {name!r} for describe; valid choices: {', '.join(names)}")


@command("list")
def cmd_list(p: argparse.ArgumentParser):
    """List registered methods, backbones, datasets, OOD sets and suites (-v: with options, defaults and facts)."""
    p.add_argument("-v", "--verbose", action="store_true", help="each method's options with defaults and help, each backbone's and dataset's facts")
    p.add_argument("--methods", action="store_true", help="methods only")

    def run(args: argparse.Namespace) -> int:
        from .backbones import BACKBONES
        from .data.base import DATASETS, load_datasets, ood_names

        load_datasets()
        from .catalogue.methods import method_names

        if args.verbose:
            blocks = [describe_method(n) for n in method_names()]
            if not args.methods:
                blocks += [describe_backbone(n) for n in BACKBONES.names()] + [describe_dataset(n) for n in DATASETS.names()]
            print("\n\n".join("\n".join(b) for b in blocks))
            return 0
        print("methods:  ", ", ".join(_shown(n) for n in method_names()))
        if not args.methods:
            print("backbones:", ", ".join(BACKBONES.names()))
            print("datasets: ", ", ".join(DATASETS.names()))
            print("ood sets: ", ", ".join(ood_names()), "(eval.ood)")
            print("suites:   ", ", ".join(sorted(q.stem for q in C.SUITES_DIR.glob("*.toml"))))
        return 0

    return run


@command("describe")
def cmd_describe(p: argparse.ArgumentParser):
    """Describe a method (options, defaults, help), a backbone, a dataset or a config table (run, train, eval, data)."""
    p.add_argument("name", help="a method, backbone, dataset, OOD set, or config table name")

    def run(args: argparse.Namespace) -> int:
        print("\n".join(describe(args.name)))
        return 0

    return run


@command("check-method")
def cmd_check_method(p: argparse.ArgumentParser):
    """Run the method contract checks on a registered method (built-in or plug-in); exit 1 on a failure. Then the
    advice (``checks.ADVICE_CHECKS``: no torch.compile graph break in the training forward), a WARN line each."""
    p.add_argument("name", help="a registered method name (plug-ins: load them with PLURES_PLUGINS=module)")
    p.add_argument("--backbone", default="resnet8", help="backbone to build the method on (default: resnet8)")
    p.add_argument("--width", type=int, default=8, help="the backbone's width option (default: 8; 0: the backbone's default)")
    p.add_argument("--classes", type=int, default=5, help="classes of the check's task (default: 5)")
    p.add_argument("--image-size", type=int, default=16, help="image size of the check's batch (default: 16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="method.KEY=VALUE",
                   help="a method option, e.g. --set method.members=4 (repeatable)")

    def run(args: argparse.Namespace) -> int:
        from .catalogue.checks import ADVICE_CHECKS, contract_task, run_checks
        from .catalogue.plugins import plugin_of

        config = C.apply_overrides({}, args.overrides)
        bad = sorted(set(config) - {"method"})
        if bad:
            raise C.ConfigError(f"check-method takes method options only (--set method.KEY=VALUE); got table(s) {bad}")
        task = contract_task(args.backbone, {"width": args.width} if args.width else {}, args.classes, args.image_size)
        results = run_checks(args.name, task, config.get("method", {}))
        advice = run_checks(args.name, task, config.get("method", {}), checks=list(ADVICE_CHECKS))
        plugin = plugin_of(args.name)
        where = f" (plug-in {plugin.module}, from {plugin.source})" if plugin else ""
        print(f"method {args.name}{where} on {args.backbone}, {args.classes} classes, {args.image_size}px:")
        for name, passed, message in results:
            print(f"{'PASS' if passed else 'FAIL'}  {name:<17} {message}")
        for name, passed, message in advice:  # advice: a failure warns, the exit status does not change
            print(f"{'PASS' if passed else 'WARN'}  {name:<17} {message}")
        failed = sum(not r.passed for r in results)
        warned = sum(not r.passed for r in advice)
        passed = len(results) + len(advice) - failed - warned
        print(f"{passed} passed, {failed} failed" + (f", {warned} warning{'s' if warned > 1 else ''}" if warned else ""))
        return 1 if failed else 0

    return run


# Subcommands with parsers of their own: ``python -m benchmark NAME ...`` calls ``module.main(argv)``.
DELEGATED: dict[str, tuple[str, str]] = {
    "perf": ("benchmark.tools.perf", "Measure step time, inference latency, FLOP/s, data-path share and corrupted-evaluation rate per method."),
    # "module:function" names another entry point than main (benchmark.sweep serves both sweep commands)
    "sweep": ("benchmark.sweep", "Expand a sweep file into runs and submit them as submitit job arrays (SLURM, local, debug)."),
    "sweep-status": ("benchmark.sweep:status_main", "Each run of a sweep: pending (with SLURM's reason), running, done, failed or unknown; the leaderboard job; --resubmit-failed."),
    "rescore": ("benchmark.rescore", "Recompute records' metrics from their stored predictions (report differences; --write rewrites them)."),
}


def version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version("plures")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def config_keys() -> list[str]:
    """Every ``TABLE.KEY`` that ``--set`` accepts for the fixed sections (method and backbone options vary)."""
    import dataclasses

    return [f"{name}.{f.name}" for name, cls in C.SECTIONS.items() for f in dataclasses.fields(cls)]


def unknown_flag_hint(flag: str, parser: argparse.ArgumentParser) -> str:
    """A suggestion for an unrecognised ``flag``: the subcommand's nearest option, or the ``--set`` key it names."""
    import difflib

    name = flag.split("=", 1)[0]
    options = [o for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    if close:
        return f"did you mean {close[0]}?"
    if "--set" in options:
        bare = name.lstrip("-").replace("-", "_")
        keys = [k for k in config_keys() if k.split(".", 1)[1] == bare or k == bare]
        if keys:
            return f"settings are given with --set: --set {keys[0]}=VALUE"
        return "settings are given with --set TABLE.KEY=VALUE (python -m benchmark describe run|train|eval|data lists the keys)"
    return ""


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unrecognised argument is reported with this command's usage and a suggestion."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extra = super().parse_known_args(args, namespace)
        flags = [a for a in extra if a.startswith("-")]
        if flags:
            hint = unknown_flag_hint(flags[0], self)
            self.error(f"unrecognized argument{'s' if len(extra) > 1 else ''}: {' '.join(extra)}" + (f"; {hint}" if hint else ""))
        return ns, extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description="plures: a benchmark of efficient neural-network ensembles.")
    parser.add_argument("--version", action="version", version=f"plures {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name, setup in COMMANDS.items():
        p = sub.add_parser(name, help=(setup.__doc__ or "").strip())
        p.description = (setup.__doc__ or "").strip()
        p.set_defaults(handler=setup(p))
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in DELEGATED:
        import importlib

        module_name, _, function = DELEGATED[argv[0]][0].partition(":")
        entry = getattr(importlib.import_module(module_name), function or "main")
        args = argparse.Namespace(handler=lambda _: entry(argv[1:]))
    else:
        args = parser.parse_args(argv)
    from .core.allocator import tune_host_allocator
    from .data.base import DataError
    from .records import RecordError
    from .core.registry import UnknownNameError
    from .core.runtime import StopRequested
    from .catalogue.plugins import PluginError
    from .training.train import NonFiniteLossError
    from .core.io import DiskFullError
    from .runner import RunLockedError

    try:
        tune_host_allocator()  # large CPU tensors from the heap, not fresh mappings (benchmark/allocator.py)
        return int(args.handler(args) or 0)
    except StopRequested:
        return 130
    except BrokenPipeError:  # the reader went away (``... | head``): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail again
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (C.ConfigError, DataError, RecordError, UnknownNameError, PluginError, NonFiniteLossError, ValueError, FileExistsError,
            RunLockedError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
