"""Command line: ``python -m benchmark {run,bench,cost,leaderboard,list,check-method} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from .core import config as C

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


def add_env_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where data and results live")
    g.add_argument("--data-dir", help="data root (default: $PLURES_DATA_DIR, else ./data)")
    g.add_argument("--cache-dir", help="decoded-data cache (default: $PLURES_CACHE_DIR, else ./data/cache)")
    g.add_argument("--results-dir", type=Path, default=Path("results/runs"), help="where records are written (default: results/runs)")
    g.add_argument("--checkpoint-dir", type=Path, default=Path("results/checkpoints"), help="checkpoints and final weights (default: results/checkpoints)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoints instead of starting over")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when not on a terminal)")
    g.add_argument("--tensorboard-dir", type=Path, default=None,
                   help="with train.log=tensorboard: event files in DIR/<run id>/<stage> (default: <checkpoint dir>/<run id>/tensorboard/<stage>)")


def make_env(args: argparse.Namespace):
    from .core.runtime import Environment

    env = Environment(data_dir=args.data_dir, cache_dir=args.cache_dir, results_dir=args.results_dir, checkpoint_dir=args.checkpoint_dir,
                      device=args.device, resume=args.resume, progress=not args.no_progress, log=lambda m: print(m, flush=True))
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
        run_experiment(cfg, make_env(args))
        return 0

    return run


class BenchProgress:
    """What one ``bench`` has done so far, so that running the same bench again after an
    interruption continues it: ``<checkpoint dir>/.bench/<suite>.json`` holds the selected runs'
    ids (a different selection or ``--set`` is another bench) and each run's state: ``running``
    (started, not finished: interrupted, resumed from its checkpoint), ``done`` (completed in this
    bench: skipped) or ``failed`` (started over). A bench whose runs all finished is complete; the
    next one starts anew. Records of earlier benches are never taken for this one's."""

    def __init__(self, path: Path, run_ids: list[str], restart: bool) -> None:
        import json

        self.path = path
        self.key = sorted(set(run_ids))
        old: dict = {}
        if not restart and path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = {}
        self.continued = bool(old) and old.get("runs_selected") == self.key and not old.get("complete")
        self.state: dict = old if self.continued else {"runs_selected": self.key, "started": _now(), "complete": False, "runs": {}}

    def status(self, run_id: str) -> str:
        return self.state["runs"].get(run_id, {}).get("status", "")

    def mark(self, run_id: str, status: str, **extra: object) -> None:
        self.state["runs"][run_id] = {"status": status, "at": _now(), **extra}
        self.save()

    def finish(self) -> None:
        self.state["complete"] = all(self.status(r) == "done" for r in self.key)
        self.save()

    def save(self) -> None:
        from .core.io import atomic_write_json

        atomic_write_json(self.path, self.state)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@command("bench")
def cmd_bench(p: argparse.ArgumentParser):
    """Run a named suite end to end (every run x seed), then rebuild its leaderboard. Running the same
    bench again after an interruption continues it (--restart starts over)."""
    p.add_argument("suite", nargs="?", default="quick", help="suite name (benchmark/suites/<name>.toml) or path (default: quick)")
    p.add_argument("--only", default="", help="comma-separated run names of the suite to run (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE", help="override for every run (repeatable)")
    p.add_argument("--leaderboard-dir", type=Path, default=Path("results/leaderboards"), help="where leaderboards go")
    p.add_argument("--skip-done", action="store_true", help="skip runs that already have a completed record in --results-dir")
    p.add_argument("--restart", action="store_true",
                   help="start the bench over: forget the progress of an interrupted bench of the same runs (its checkpoints are not resumed)")
    add_cost_options(p)
    add_resamples_option(p)
    p.add_argument("--no-cost-pass", action="store_true", help="skip the interleaved cost pass after the runs (latency columns keep the per-run figures)")
    add_env_options(p)

    def run(args: argparse.Namespace) -> int:
        from .leaderboard import write_leaderboards
        from .records import load_records
        from .runner import run_experiment, run_id_of

        meta, runs = C.load_suite(args.suite)
        names = [r["run"]["name"] for r in runs]
        only = [s for s in args.only.split(",") if s]
        unknown_names = sorted(set(only) - set(names))
        if unknown_names:
            raise C.ConfigError(f"unknown run name(s) {unknown_names} in suite {meta['name']!r}; valid choices: {', '.join(sorted(set(names)))}")
        selected = [C.apply_overrides(r, args.overrides) for r in runs if not only or r["run"]["name"] in only]
        ids = [run_id_of(C.resolve(cfg)) for cfg in selected]  # every config checked before anything runs
        done = {r["training_run_id"] for r in load_records(args.results_dir).records if "training_run_id" in r} if args.skip_done else set()
        progress = BenchProgress(Path(args.checkpoint_dir) / ".bench" / f"{meta['name']}.json", ids, args.restart)
        label = {rid: f"{cfg['run']['name']} seed {cfg['run']['seed']}" for rid, cfg in zip(ids, selected)}
        if progress.continued:
            skipped = [label[r] for r in ids if progress.status(r) == "done"]
            resumed = [label[r] for r in ids if progress.status(r) == "running"]
            print(f"continuing the interrupted bench {meta['name']} of {progress.state['started']} ({progress.path}; --restart starts over):",
                  flush=True)
            print(f"  skipped, completed in this bench: {', '.join(skipped) or 'none'}", flush=True)
            print(f"  resumed from their checkpoints: {', '.join(resumed) or 'none'}", flush=True)
            print(f"  to run: {len(ids) - len(skipped)} of {len(ids)}", flush=True)
        elif args.restart:
            print(f"bench {meta['name']}: starting over (--restart)", flush=True)
        progress.save()
        env = make_env(args)
        t0 = time.perf_counter()
        failed = []
        for i, (cfg, rid) in enumerate(zip(selected, ids), 1):
            if rid in done:
                print(f"[{i}/{len(selected)}] {rid}: record exists, skipped", flush=True)
                continue
            if progress.status(rid) == "done":
                print(f"[{i}/{len(selected)}] {label[rid]}: completed in this bench, skipped", flush=True)
                continue
            resume = args.resume or progress.status(rid) == "running"
            print(f"[{i}/{len(selected)}] {label[rid]}{' (resuming)' if resume else ''} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)
            progress.mark(rid, "running")
            try:
                env.resume = resume
                paths = run_experiment(cfg, env)
                progress.mark(rid, "done", records=[str(q) for q in paths])
            except Exception as exc:  # a failed run is recorded; the suite goes on
                from .core.runtime import StopRequested

                if isinstance(exc, StopRequested):
                    print(f"bench {meta['name']} interrupted; run the same command again to continue it (--restart starts over)",
                          file=sys.stderr, flush=True)
                    raise
                progress.mark(rid, "failed", error=f"{type(exc).__name__}: {exc}")
                failed.append((cfg["run"]["name"], f"{type(exc).__name__}: {exc}"))
        progress.finish()
        print(f"suite {meta['name']}: {len(selected)} runs in {time.perf_counter() - t0:.0f}s", flush=True)
        if not args.no_cost_pass:
            bench_cost_pass(meta["name"], args)
        written = write_leaderboards(args.results_dir, args.leaderboard_dir, suites=[meta["name"]], cost_dir=args.cost_dir,
                                     n_resamples=args.resamples)
        for path in written:
            print(f"leaderboard: {path}")
        for name, err in failed:
            print(f"FAILED {name}: {err}", file=sys.stderr)
        return 1 if failed else 0

    return run


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
                      cache_dir=args.cache_dir, device=args.device, repeats=args.cost_repeats, skip_missing=True, log=lambda m: print(m, flush=True))
    except Exception as exc:  # noqa: BLE001 - the runs' records stand; only the latency columns lose the interleaved figures
        print(f"warning: cost pass of suite {suite} failed ({type(exc).__name__}: {exc}); latency columns keep the per-run figures",
              file=sys.stderr, flush=True)


@command("cost")
def cmd_cost(p: argparse.ArgumentParser):
    """Measure every final model of a suite's records together, interleaved (median of repeats with min-max, batch 1 and the large
    batch), write <cost dir>/<suite>.json and rebuild the suite's leaderboard, whose latency columns then use these figures."""
    p.add_argument("suite", help="suite name (or its .toml file) whose records to measure")
    p.add_argument("--leaderboard-dir", type=Path, default=Path("results/leaderboards"), help="where the suite's leaderboard is rebuilt")
    p.add_argument("--no-leaderboard", action="store_true", help="only write the cost pass")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out (and name) records whose final weights are missing instead of failing; they keep their per-run latency")
    add_cost_options(p)
    add_resamples_option(p)
    add_env_options(p)

    def run(args: argparse.Namespace) -> int:
        from .cost_pass import run_cost_pass, suite_name
        from .leaderboard import write_leaderboards
        from .leaderboard.costs import default_cost_dir

        suite = suite_name(args.suite)
        run_cost_pass(suite, args.results_dir, args.checkpoint_dir, args.cost_dir or default_cost_dir(args.results_dir), data_dir=args.data_dir,
                      cache_dir=args.cache_dir, device=args.device, repeats=args.cost_repeats, skip_missing=args.skip_missing,
                      log=lambda m: print(m, flush=True))
        if not args.no_leaderboard:
            for path in write_leaderboards(args.results_dir, args.leaderboard_dir, suites=[suite], cost_dir=args.cost_dir,
                                          n_resamples=args.resamples):
                print(f"leaderboard: {path}")
        return 0

    return run


@command("leaderboard")
def cmd_leaderboard(p: argparse.ArgumentParser):
    """Rebuild leaderboards (tables, plots, page) from the run records; a pure function of the records."""
    p.add_argument("--results-dir", type=Path, default=Path("results/runs"), help="records to read (default: results/runs)")
    p.add_argument("--out", type=Path, default=Path("results/leaderboards"), help="output folder (default: results/leaderboards)")
    p.add_argument("--suite", action="append", default=[], help="only these suites (repeatable; default: all)")
    p.add_argument("--cost-dir", type=Path, default=None, help="interleaved cost passes to read (default: 'cost' beside --results-dir)")
    add_resamples_option(p)

    def run(args: argparse.Namespace) -> int:
        from .leaderboard import write_leaderboards
        from .leaderboard.write import check_arguments

        check_arguments(args.results_dir, args.suite or None)  # a missing folder or a suite without records: exit 2
        for path in write_leaderboards(args.results_dir, args.out, suites=args.suite or None, cost_dir=args.cost_dir, n_resamples=args.resamples):
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
    """Run the method contract checks on a registered method (built-in or plug-in); exit 1 on a failure."""
    p.add_argument("name", help="a registered method name (plug-ins: load them with PLURES_PLUGINS=module)")
    p.add_argument("--backbone", default="resnet8", help="backbone to build the method on (default: resnet8)")
    p.add_argument("--width", type=int, default=8, help="the backbone's width option (default: 8; 0: the backbone's default)")
    p.add_argument("--classes", type=int, default=5, help="classes of the check's task (default: 5)")
    p.add_argument("--image-size", type=int, default=16, help="image size of the check's batch (default: 16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="method.KEY=VALUE",
                   help="a method option, e.g. --set method.members=4 (repeatable)")

    def run(args: argparse.Namespace) -> int:
        from .catalogue.checks import contract_task, run_checks
        from .catalogue.plugins import plugin_of

        config = C.apply_overrides({}, args.overrides)
        bad = sorted(set(config) - {"method"})
        if bad:
            raise C.ConfigError(f"check-method takes method options only (--set method.KEY=VALUE); got table(s) {bad}")
        task = contract_task(args.backbone, {"width": args.width} if args.width else {}, args.classes, args.image_size)
        results = run_checks(args.name, task, config.get("method", {}))
        plugin = plugin_of(args.name)
        where = f" (plug-in {plugin.module}, from {plugin.source})" if plugin else ""
        print(f"method {args.name}{where} on {args.backbone}, {args.classes} classes, {args.image_size}px:")
        for name, passed, message in results:
            print(f"{'PASS' if passed else 'FAIL'}  {name:<17} {message}")
        failed = sum(not r.passed for r in results)
        print(f"{len(results) - failed} passed, {failed} failed")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description="plures: a benchmark of efficient neural-network ensembles.")
    parser.add_argument("--version", action="version", version=f"plures {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (C.ConfigError, DataError, RecordError, UnknownNameError, PluginError, NonFiniteLossError, ValueError, FileExistsError,
            RunLockedError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
