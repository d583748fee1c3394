"""Where a CPU training step's time goes, per operator: ``python -m benchmark.tools.profile_step``.

torch.profiler (CPU activities) over ``--steps`` steady-state training steps (after ``--warmup``
steps, so torch.compile's compiling first step is never profiled) of the quick suite's
deterministic, MIMO, BatchEnsemble and Packed rows at the suite's shapes (ResNet-8 width 16,
batch 256, fp32), with each row's method options read from ``benchmark/suites/quick.toml``. Each
row runs in two settings:

- ``before``: the default memory layout, eager (what the quick suite ran until channels-last and
  torch.compile were switched on);
- ``now``: the row's own ``train.channels_last`` and ``train.compile`` (channels-last everywhere,
  compiled where the suite compiles).

A step is what ``benchmark.tools.perf.StepBench.step`` runs: batch formation (gather, crop, flip,
normalise, the method's member inputs), forward, loss, backward, SGD update. Step times are taken
without the profiler (median of ``--repeats`` steps, interleaved across rows and settings); the
profile then gives each operator's self CPU time per step and groups it into the categories of
:data:`CATEGORY_RULES` (one table: the first rule that matches wins). Shares are of the profiled
self CPU time (which includes the profiler's own overhead, so the profiled step is a little longer
than the timed one).

Writes ``results/perf/profile-cpu-resnet8-fp32.{md,json}`` (``--name`` changes the stem). The
numbers are measurements of this machine at the time; nothing in a test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

try:
    import resource

    RESOURCE = True
except ImportError:  # not a Unix
    RESOURCE = False

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..core.config import load_suite
from ..core.cpu import configure_threads, cpu_model, thread_state
from ..core.io import atomic_write_json, atomic_write_text
from ..data.datasets.cifar import CIFAR_MEAN, CIFAR_STD
from ..data.device import DeviceData
from ..methods.base import Task
from ..records import provenance, utc_now
from .perf import StepBench, _spread, synthetic_data, time_call

DEFAULT_ROWS = ("deterministic", "mimo", "batchensemble", "packed")
SETTINGS = ("before", "now")
SETTING_TEXT = {"before": "default memory layout (NCHW), eager: the quick suite until channels-last and torch.compile were switched on",
                "now": "the row's quick-suite settings: channels-last, torch.compile where the row sets train.compile"}

STEP_LABEL = "## training step ##"  # record_function around each step: its self time is the Python between operators
DATA_LABEL = "## batch formation ##"  # record_function around the data path (gather, crop, flip, normalise, member inputs)
# Why each profiled step has a profiler session of its own, after unprofiled steps: the profiler's event records are
# small allocations made during the step; with the tuned host allocator (benchmark.core.allocator: large tensors from
# the heap, no trimming) they split the large free blocks the step's tensors reuse, so every further profiled step of a
# session grows the heap and page-faults its tensors in again (measured on the BatchEnsemble eager step: ~0 minor faults
# per unprofiled step, 120,000-150,000 per profiled step from the second on, and the step 2-3x as long, the convolutions
# included; the first profiled step of a session is clean, and the steps after a session fault for a few steps more).
# Summing one-step sessions, each once an unprofiled step runs without faulting, and replacing a profiled step that
# faulted anyway, keeps the profile of the step the timings measure (which runs without faults once warm); the record
# keeps each profiled step's faults and how many sessions were discarded.
PROFILE_NOTE = ("one profiler session per profiled step, each after unprofiled steps until one runs with under 1,000 minor page faults, "
                "a profiled step that faulted more than that replaced by another (up to 3x the steps in all): "
                "within a longer session (and for a few steps after one) the profiler's own small allocations fragment the heap "
                "the step's large tensors reuse, and the step page-faults its tensors in again (the BatchEnsemble eager step ran "
                "2-3x as long)")
COMPILED_GRAPH = re.compile(r"^## Call CompiledFxGraph \w+ ##$")

# How an operator's self CPU time is categorised: the first rule whose pattern matches wins. ``scope``
# "self": the pattern is matched against the operator's own name; "enclosing": against its own name and
# the names of every operator or annotation it runs inside (e.g. an aten::add_ inside Optimizer.step is
# optimizer time, an aten::empty inside aten::mkldnn_convolution is convolution time). Nothing matched:
# "other" (the record lists what it contained).
CATEGORY_RULES: list[tuple[str, str, str]] = [
    ("optimizer", "enclosing", r"^Optimizer\.(step|zero_grad)|^aten::_foreach_"),
    ("data path (batch formation)", "enclosing", "^## batch formation ##$"),  # DATA_LABEL
    ("copies and layout reorders", "self",
     r"^aten::(copy_|contiguous|clone|_to_copy|to_dense|_to_dense|to_mkldnn|mkldnn_reorder_conv2d_weight|_mkldnn_reshape)$|reorder"),
    ("convolution backward", "enclosing", r"^aten::(convolution_backward|mkldnn_convolution_backward\w*|_slow_conv2d_backward\w*)$|^ConvolutionBackward\d+$"),
    ("convolution forward", "enclosing", r"^aten::(conv2d|convolution|_convolution|mkldnn_convolution|_slow_conv2d_forward|thnn_conv2d)$|^mkldnn::_convolution"),
    ("batch norm", "enclosing", r"^aten::(batch_norm|_batch_norm_impl_index|native_batch_norm|native_batch_norm_backward|_native_batch_norm_legit\w*)$"
                                r"|^NativeBatchNormBackward\d+$"),
    ("matmul (linear layers)", "self", r"^aten::(mm|addmm|bmm|matmul|linear)$"),
    ("element-wise and activation", "self",
     r"^aten::(add|add_|sub|sub_|mul|mul_|div|div_|neg|relu|relu_|threshold_backward|clamp_min|clamp_min_|clamp|where|sum|mean|"
     r"fill_|zero_|zeros|ones_like|zeros_like|addcmul_|addcdiv_|lerp_|sqrt|rsqrt|exp|pow|bernoulli_|dropout|native_dropout|sign|abs)$"),
    ("compiled graph kernels", "enclosing", COMPILED_GRAPH.pattern),
    ("framework overhead", "self",
     r"^## training step ##$|^autograd::engine::evaluate_function|^torch::autograd::AccumulateGrad$|Backward\d*$|^detach_?$"
     r"|^TorchDynamo|^Torch-Compiled Region|^CompiledFunction|^Pregraph bytecode|^AOTDispatcher"
     r"|^aten::(view|_unsafe_view|reshape|as_strided|as_strided_|expand|squeeze|unsqueeze|t|transpose|permute|select|slice|"
     r"empty|empty_like|empty_strided|resize_|detach|detach_|alias|to|lift_fresh|resolve_conj|resolve_neg|chunk|split|unbind|flatten)$"),
]
CATEGORIES = [name for name, _, _ in CATEGORY_RULES] + ["other"]
CATEGORY_NOTES = {
    "convolution forward": "oneDNN's own reorders of inputs and weights (e.g. to its blocked layouts) run inside these calls and count here",
    "compiled graph kernels": "inductor's generated C++ kernels (fused element-wise, batch norm, activation and reduction code) inside a "
                              "compiled graph's call; the graph's extern calls (convolutions, matmuls) are profiled as their own operators",
    "framework overhead": "the Python between operators (the step's own self time), the autograd engine's bookkeeping and freed buffers, "
                          "view and allocation operators, torch.compile's guards and wrappers",
}
_COMPILED_RULES = [(name, scope, re.compile(pattern)) for name, scope, pattern in CATEGORY_RULES]
assert _COMPILED_RULES[1][2].match(DATA_LABEL) and _COMPILED_RULES[-1][2].match(STEP_LABEL)  # the labels' rules name them


def categorise(name: str, enclosing: list[str]) -> str:
    """The category of an operator called ``name`` running inside ``enclosing`` (nearest first)."""
    for category, scope, pattern in _COMPILED_RULES:
        if pattern.search(name) or (scope == "enclosing" and any(pattern.search(n) for n in enclosing)):
            return category
    return "other"


def display_name(name: str, enclosing: list[str]) -> str:
    """The operator's name as the tables show it (a compiled graph's hash replaced by forward/backward)."""
    if COMPILED_GRAPH.match(name):
        return "compiled graph (" + ("backward" if any(n.startswith("CompiledFunctionBackward") for n in enclosing) else "forward") + ")"
    return name


@dataclass
class Row:
    """One quick-suite row as the profile runs it."""

    name: str
    method: str
    options: dict[str, Any]
    backbone: str
    backbone_options: dict[str, Any]
    batch: int
    precision: str
    channels_last: bool
    compile: bool
    settings: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # setting -> (channels_last, compile)


def suite_rows(suite: str, names: list[str], width: int | None = None, batch: int | None = None) -> list[Row]:
    """The named rows of ``suite`` (their method options, backbone, batch, precision, layout and compile),
    with ``width``/``batch`` overriding the suite's where given."""
    _, runs = load_suite(suite, seeds=[0])
    by_name = {r["run"]["name"]: r for r in runs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown} of suite {suite!r}; valid choices: {', '.join(by_name)}")
    rows = []
    for n in names:
        cfg = by_name[n]
        train = cfg.get("train", {})
        backbone_options = dict(cfg.get("backbone", {}))
        if width is not None:
            backbone_options["width"] = width
        row = Row(n, cfg["run"]["method"], dict(cfg.get("method", {})), cfg["run"].get("backbone", "resnet20"), backbone_options,
                  int(batch or train.get("batch_size", 128)), train.get("precision", "fp32"), bool(train.get("channels_last", False)),
                  bool(train.get("compile", False)))
        row.settings = {"before": (False, False), "now": (row.channels_last, row.compile)}
        rows.append(row)
    return rows


STEADY_FAULTS = 1000  # minor page faults (4 KiB pages: 4 MiB) under which a step counts as running on a steady heap


def minor_faults() -> int:
    """This process's minor page faults so far (0 where ``resource`` is missing)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if RESOURCE else 0


def settle_heap(bench: StepBench, most: int) -> int:
    """Unprofiled steps until one runs with fewer than :data:`STEADY_FAULTS` minor page faults (at most ``most``;
    without ``resource``, exactly ``most``); returns how many ran."""
    for i in range(most):
        before = minor_faults()
        bench.step()
        if RESOURCE and minor_faults() - before < STEADY_FAULTS:
            return i + 1
    return most


def profiled_step(bench: StepBench) -> None:
    """One training step as the profile sees it (the data path and the step annotated)."""
    with record_function(STEP_LABEL):
        with record_function(DATA_LABEL):
            inputs, targets = bench.batch_inputs()
        bench.step(inputs, targets)


def summarise_profile(events: Any, steps: int, top: int) -> dict[str, Any]:
    """Per-step self CPU time by category and by operator from the profiler's events."""
    by_op: dict[str, dict[str, Any]] = {}
    by_cat: dict[str, float] = defaultdict(float)
    for e in events:
        enclosing, parent = [], e.cpu_parent
        while parent is not None:
            enclosing.append(parent.name)
            parent = parent.cpu_parent
        category = categorise(e.name, enclosing)
        us = float(e.self_cpu_time_total)
        by_cat[category] += us
        name = display_name(e.name, enclosing)
        op = by_op.setdefault(f"{name}\0{category}", {"name": name, "category": category, "calls": 0, "us": 0.0})
        op["calls"] += 1
        op["us"] += us
    total = sum(by_cat.values()) or 1.0
    ops = sorted(by_op.values(), key=lambda o: -o["us"])

    def row(o: dict[str, Any]) -> dict[str, Any]:
        return {"name": o["name"], "category": o["category"], "calls_per_step": o["calls"] / steps,
                "self_ms_per_step": o["us"] / 1000 / steps, "share": o["us"] / total}

    return {"profiled_step_ms": total / 1000 / steps,
            "categories": {c: {"self_ms_per_step": by_cat.get(c, 0.0) / 1000 / steps, "share": by_cat.get(c, 0.0) / total} for c in CATEGORIES},
            "top_ops": [row(o) for o in ops[:top]],
            "other_ops": [row(o) for o in ops if o["category"] == "other"][:top]}


def measure(rows: list[Row], warmup: int, steps: int, repeats: int, top: int, log: Callable[[str], None],
            compile_backend: str = "inductor", settle: int = 2) -> dict[str, Any]:
    """Step times (interleaved, no profiler) and one profile per row and setting (``steps`` profiler sessions of one
    step each, every one after ``settle`` unprofiled steps)."""
    device = torch.device("cpu")
    out: dict[str, Any] = {}
    benches: dict[tuple[str, str], StepBench] = {}
    first: dict[tuple[str, str], float] = {}
    for row in rows:
        task = Task(num_classes=10, backbone=row.backbone, backbone_options=row.backbone_options)
        data = DeviceData(synthetic_data(max(4 * row.batch, 64)), CIFAR_MEAN, CIFAR_STD, device)
        for setting in SETTINGS:
            channels_last, compile = row.settings[setting]
            bench = StepBench(row.method, task, data, row.batch, row.precision, channels_last, row.options, compile=compile,
                              compile_backend=compile_backend)
            first[row.name, setting] = time_call(bench.step, device)  # compiles, where compiled
            for _ in range(max(0, warmup - 1)):
                bench.step()
            benches[row.name, setting] = bench
            log(f"{row.name} {setting}: first step {first[row.name, setting]:.2f} s (channels_last {channels_last}, compile {compile})")
    times: dict[tuple[str, str], list[float]] = {k: [] for k in benches}
    for _ in range(repeats):  # interleaved across rows and settings
        for key, bench in benches.items():
            times[key].append(time_call(bench.step, device))
    for row in rows:
        entry: dict[str, Any] = {"method": row.method, "options": row.options, "settings": {}}
        for setting in SETTINGS:
            bench = benches[row.name, setting]
            sessions: list[tuple[int, int, list[Any]]] = []  # (page faults, settle steps, events)
            for _ in range(3 * steps):  # one step per profiler session, once the heap is steady again (see PROFILE_NOTE)
                settled = settle_heap(bench, settle)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    before = minor_faults()
                    profiled_step(bench)
                    faulted = minor_faults() - before
                sessions.append((faulted, settled, list(prof.events())))
                if sum(f < STEADY_FAULTS for f, _, _ in sessions) >= steps:
                    break
            kept = sorted(sessions, key=lambda x: x[0])[:steps]  # the least faulted
            summary = summarise_profile([e for _, _, events in kept for e in events], steps, top)
            summary["profiled_step_page_faults"] = [f for f, _, _ in kept] if RESOURCE else None
            summary["settle_steps"] = [n for _, n, _ in kept]
            summary["discarded_sessions"] = len(sessions) - len(kept)
            channels_last, compile = row.settings[setting]
            spread = _spread([t * 1000 for t in times[row.name, setting]])
            entry["settings"][setting] = {"channels_last": channels_last, "compile": compile, "step_ms": spread,
                                          "first_step_s": first[row.name, setting], **summary}
            shares = ", ".join(f"{c} {v['share'] * 100:.0f}%" for c, v in summary["categories"].items() if v["share"] >= 0.05)
            log(f"{row.name} {setting}: {spread['median']:.1f} ms/step (profiled {summary['profiled_step_ms']:.1f}); {shares}")
        s = entry["settings"]
        entry["speedup_now_over_before"] = s["before"]["step_ms"]["median"] / s["now"]["step_ms"]["median"]
        out[row.name] = entry
    return out


def render(result: dict[str, Any]) -> str:
    """The record as Markdown (rounding only here)."""
    methods = result["methods"]
    names = result.get("rows") or list(methods)
    lines = [f"# Where a CPU training step's time goes: {result['backbone']} width {result['backbone_options'].get('width', '-')}, "
             f"batch {result['batch']}, {result['precision']}", "",
             f"CPU: {result['cpu_model']}; torch {result['torch']}; {result['threads']['intra_op']} intra-op thread(s), "
             f"{result['threads']['inter_op']} inter-op; host allocator {'tuned' if result['host_allocator'].get('tuned') else 'default'}. "
             f"Generated {result['created']}.", "",
             f"Command: `{result['command']}`", "",
             f"Rows and their method options from `{result['suite_file']}` (" + "; ".join(
                 f"{n}: {methods[n]['method']} {json.dumps(methods[n]['options'])}" for n in names) + "). "
             f"Synthetic images (the step's cost does not depend on their content). A step is `perf.StepBench.step`: batch formation, "
             f"forward, loss, backward, SGD update.", "",
             "Settings:", ""]
    lines += [f"- `{s}`: {result['settings'][s]}" for s in SETTINGS]
    lines += ["", f"Step time: median of {result['repeats']} steps timed without the profiler, interleaved across rows and settings, "
              f"after {result['warmup']} warm-up step(s) (the first of them compiles, where compiled) [min-max]. Profile: torch.profiler "
              f"(CPU activities) over {result['steps']} further steps per row and setting, {PROFILE_NOTE} (at most {result.get('settle', 0)}); "
              f"shares are of the profiled self CPU time (the profiled step includes the profiler's overhead).", "",
              "| row | before ms/step | now ms/step | now compiled | speedup | profiled before / now ms | profiled steps' minor page faults before / now (median) |",
              "|---|---:|---:|---|---:|---:|---:|"]
    def faults(st: dict[str, Any]) -> str:
        if not st.get("profiled_step_page_faults"):
            return "-"
        gone = st.get("discarded_sessions", 0)
        return f"{statistics.median(st['profiled_step_page_faults']):,.0f}" + (f" ({gone} replaced)" if gone else "")

    for n in names:
        b, w = methods[n]["settings"]["before"], methods[n]["settings"]["now"]
        lines.append(f"| {n} | {b['step_ms']['median']:.1f} [{b['step_ms']['min']:.1f}-{b['step_ms']['max']:.1f}] | "
                     f"{w['step_ms']['median']:.1f} [{w['step_ms']['min']:.1f}-{w['step_ms']['max']:.1f}] | {'yes' if w['compile'] else 'no'} | "
                     f"{methods[n]['speedup_now_over_before']:.2f}x | {b['profiled_step_ms']:.1f} / {w['profiled_step_ms']:.1f} | {faults(b)} / {faults(w)} |")
    lines += ["", "## Categories", "", "Share of the profiled step (ms per step in brackets).", "",
              "| category | " + " | ".join(f"{n} {s}" for n in names for s in SETTINGS) + " |",
              "|---|" + "---:|" * (len(names) * len(SETTINGS))]
    for c in CATEGORIES:
        cells = []
        for n in names:
            for s in SETTINGS:
                v = methods[n]["settings"][s]["categories"][c]
                cells.append(f"{v['share'] * 100:.1f}% ({v['self_ms_per_step']:.1f})" if v["self_ms_per_step"] >= 0.05 else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "What \"other\" contains (its largest operators, ms per step):", ""]
    for n in names:
        for s in SETTINGS:
            ops = methods[n]["settings"][s]["other_ops"][:6]
            text = ", ".join(f"`{o['name']}` {o['self_ms_per_step']:.2f}" for o in ops) or "nothing"
            lines.append(f"- {n} {s}: {text}")
    lines += ["", "## Top operators by self CPU time", ""]
    for n in names:
        for s in SETTINGS:
            st = methods[n]["settings"][s]
            lines += [f"### {n}, {s} ({st['step_ms']['median']:.1f} ms/step)", "", "| operator | category | calls/step | self ms/step | share |",
                      "|---|---|---:|---:|---:|"]
            lines += [f"| `{o['name']}` | {o['category']} | {o['calls_per_step']:g} | {o['self_ms_per_step']:.2f} | {o['share'] * 100:.1f}% |"
                      for o in st["top_ops"]]
            lines.append("")
    lines += ["## Categorisation rules", "",
              "The first rule that matches an operator wins (`benchmark.tools.profile_step.CATEGORY_RULES`). Scope `self`: the pattern is "
              "matched against the operator's own name; `enclosing`: also against every operator or annotation it runs inside. "
              "An operator no rule matches is \"other\".", "", "| category | scope | pattern | note |", "|---|---|---|---|"]
    for category, scope, pattern in result["category_rules"]:
        lines.append(f"| {category} | {scope} | `{pattern.replace('|', chr(92) + '|')}` | {CATEGORY_NOTES.get(category, '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.profile_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="quick", help="the suite whose rows are profiled (default quick)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated row names (default {','.join(DEFAULT_ROWS)})")
    p.add_argument("--width", type=int, default=None, help="override the suite's backbone width")
    p.add_argument("--batch", type=int, default=None, help="override the suite's batch size")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing and profiling (the first compiles, where compiled)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per row and setting, without the profiler")
    p.add_argument("--steps", type=int, default=10, help="profiled steps per row and setting")
    p.add_argument("--settle", type=int, default=10, help="at most this many unprofiled steps before each profiled step, until one "
                   "runs with under 1,000 minor page faults (default 10)")
    p.add_argument("--top", type=int, default=12, help="operators listed per row and setting")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend for the compiled rows (default inductor, as training)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as every run, the usable physical cores)")
    p.add_argument("--name", default=None, help="output file stem (default profile-cpu-<backbone>-<precision>)")
    p.add_argument("--out", type=Path, default=Path("results/perf"))
    args = p.parse_args(argv)
    from ..core.allocator import tune_host_allocator

    allocator = tune_host_allocator()  # as every run does
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        configure_threads()
    rows = suite_rows(args.suite, [r for r in args.rows.split(",") if r], args.width, args.batch)
    log = lambda m: print(m, flush=True)  # noqa: E731
    shapes = {(r.backbone, tuple(sorted(r.backbone_options.items())), r.batch, r.precision) for r in rows}
    if len(shapes) != 1:
        raise ValueError(f"rows {[r.name for r in rows]} differ in backbone, batch or precision: {sorted(shapes)}")
    first = rows[0]
    command = "python -m benchmark.tools.profile_step" + "".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result: dict[str, Any] = {"created": utc_now(), "command": command, "cpu_model": cpu_model(), "torch": torch.__version__,
                              "threads": thread_state(), "host_allocator": allocator, "suite": args.suite,
                              "suite_file": f"benchmark/suites/{args.suite}.toml" if not args.suite.endswith(".toml") else args.suite,
                              "backbone": first.backbone, "backbone_options": first.backbone_options, "batch": first.batch,
                              "precision": first.precision, "settings": dict(SETTING_TEXT), "warmup": args.warmup, "repeats": args.repeats,
                              "steps": args.steps, "settle": args.settle, "profile_note": PROFILE_NOTE, "compile_backend": args.compile_backend,
                              "category_rules": [list(r) for r in CATEGORY_RULES]}
    result["rows"] = [r.name for r in rows]  # the order of the tables (the JSON's keys are sorted)
    result["methods"] = measure(rows, args.warmup, args.steps, args.repeats, args.top, log, args.compile_backend, args.settle)
    result["provenance"] = provenance("cpu")
    stem = args.name or f"profile-cpu-{first.backbone}-{first.precision}"
    atomic_write_json(args.out / f"{stem}.json", result)
    table = render(result)
    atomic_write_text(args.out / f"{stem}.md", table)
    log(f"wrote {args.out / (stem + '.md')} and .json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
