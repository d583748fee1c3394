"""A study over one config axis (e.g. the capacity study over ``backbone.width``): each method's
difference to the deterministic model against the axis, with intervals over training seeds.

Input: the completed records of the study's cells (a suite's runs, chosen by the caller from its
run ids, so records of an earlier configuration never enter) and the axis, a flattened config key.
Rows: the records' (method, variant) with every other shaping setting but the axis and the seed
alike (:func:`benchmark.leaderboard.frame.settings` names the differing keys when one method has
several). For every row, axis value and metric:

* **the gap**: ``row_s - deterministic_s`` at the same axis value, paired by seed (seed ``s`` of the
  row against seed ``s`` of the block's plain deterministic row), mean over the paired seeds with a
  95% Student-t interval over them (:func:`benchmark.evaluation.seed_interval.t_interval`): the
  training randomness the seeds sample, not test-set sampling (both sides see the same test
  examples); one paired seed: no interval;
* **the slope per doubling**: per seed, the least-squares slope of the gap against ``log2(axis)``
  over the axis values that seed has (2 or more), then the t interval over seeds;
* **DEE** (:func:`benchmark.leaderboard.comparisons.row_dee`, the leaderboard's procedure): against
  the deep-ensemble row at the same axis value, from the stored member predictions (mean curve
  and mean calibrated NLL over seeds; no interval);
* **the training cost**: each cell's ``cost.train_seconds`` over its seeds (reused members count in
  their own runs), its ``cost.rows_per_example`` and the training hours per device kind.

Each record's device kind (:func:`device_kind`: the CPU model and its vector instruction sets on a
CPU run, the GPU on a GPU run) is listed per cell; a gap whose paired records ran on different kinds
(or a slope whose records did) is marked, since fp32 training differs across CPU instruction sets (and GPUs). **Cross-CPU
repeats** (``repeats``: records of a cell trained again on another kind of CPU, kept apart from the
study's own records) are listed beside the study's record of the same cell and seed: the spread
across CPU kinds next to the seed-to-seed spread of that cell, so a reader can tell which
differences neither explains. numpy and pandas only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.io import atomic_write_text
from ..evaluation.seed_interval import SeedInterval, t_interval
from .comparisons import DEEResult, dee_group, row_dee
from .frame import config_fingerprint, flatten, record_row, settings
from .mce import BASELINE_METHOD
from .reproduced import cpu_kind

__all__ = ["STUDY_METRICS", "CrossCPU", "Study", "StudyBlock", "build_study", "device_kind", "render_study_csv", "render_study_markdown", "write_study"]

# (record_row key, label, scale): accuracy in percentage points; cNLL is the corrupted summary
STUDY_METRICS: tuple[tuple[str, str, float], ...] = (("accuracy", "Δ Acc (pp)", 100.0), ("nll", "Δ NLL", 1.0), ("cal_nll", "Δ cal. NLL", 1.0),
                                                      ("ece", "Δ ECE", 1.0), ("cNLL", "Δ cNLL (corrupted)", 1.0))
MIXED = "†"


def device_kind(rec: dict[str, Any]) -> str:
    """What a record was trained on: on a CPU run the CPU's model and vector instruction sets
    (:func:`benchmark.leaderboard.reproduced.cpu_kind`, e.g. ``AMD EPYC (avx2 avx512 avx512_bf16)``:
    one model name covers CPUs that train differently), else ``device_name``; on a GPU run the GPU's
    name (``device_name``)."""
    prov = rec.get("provenance") or {}
    if not str(prov.get("device", "cpu")).startswith("cuda"):
        kind = cpu_kind(rec)
        if kind:
            return kind
    return str(prov.get("device_name") or prov.get("device") or "unknown")


def _axis_fingerprint(config: dict[str, Any], axis: str) -> str:
    flat = json.loads(config_fingerprint(config))
    flat.pop(axis, None)
    return json.dumps(flat, sort_keys=True)


@dataclass
class Gap:
    """One cell's paired difference for one metric: the interval over the paired ``seeds``, and
    whether the paired records ran on different device kinds."""

    interval: SeedInterval | None
    seeds: tuple[int, ...]
    mixed_device: bool = False


@dataclass
class CrossCPU:
    """One cell (row, axis value, seed) trained on several kinds of CPU: per kind, its values of the
    study's metrics (``values[kind][metric]``, unscaled; ``study_kind``: the kind of the study's own
    record), and the seed-to-seed standard deviation of the same cell in the study (``seed_sd[metric]``
    over its seeds, 2 or more)."""

    row: str
    axis_value: Any
    seed: int
    study_kind: str
    values: dict[str, dict[str, float]]
    seed_sd: dict[str, float] = field(default_factory=dict)

    def spread(self, key: str) -> float:
        """max − min over the CPU kinds (nan when fewer than two have the metric)."""
        vals = [v[key] for v in self.values.values() if math.isfinite(v.get(key, math.nan))]
        return max(vals) - min(vals) if len(vals) >= 2 else math.nan


@dataclass
class StudyBlock:
    """The study of one (dataset, backbone): its rows (labels, baseline first), axis values, the gaps
    ``(row, axis value, metric)``, slopes ``(row, metric)``, DEE ``(row, axis value)``, the baseline's
    own values ``(axis value, metric)``, the device kinds and seeds ``(row, axis value)``."""

    dataset: str
    backbone: str
    baseline: str | None
    rows: list[str]
    axis_values: list[Any]
    gaps: dict[tuple[str, Any, str], Gap] = field(default_factory=dict)
    slopes: dict[tuple[str, str], Gap | None] = field(default_factory=dict)
    dee: dict[tuple[str, Any], DEEResult] = field(default_factory=dict)
    baseline_values: dict[tuple[Any, str], SeedInterval] = field(default_factory=dict)
    devices: dict[tuple[str, Any], list[str]] = field(default_factory=dict)
    seeds: dict[tuple[str, Any], list[int]] = field(default_factory=dict)
    cross_cpu: list[CrossCPU] = field(default_factory=list)
    train_seconds: dict[tuple[str, Any], list[float]] = field(default_factory=dict)
    rows_per_example: dict[tuple[str, Any], float] = field(default_factory=dict)
    train_hours: dict[str, float] = field(default_factory=dict)  # per device kind, over the block's records


@dataclass
class Study:
    name: str
    axis: str
    blocks: list[StudyBlock]
    description: str = ""
    missing: list[str] = field(default_factory=list)
    command: str = ""
    budget: str = ""
    runs: int = 0  # the study's runs, finished or not (0: not known)


def _frame(records: list[dict[str, Any]], axis: str) -> pd.DataFrame:
    rows = []
    for rec in records:
        row = record_row(rec)
        flat = flatten(rec["config"])
        if axis not in flat:
            raise ValueError(f"record {rec.get('_path', rec.get('run_id'))} has no config key {axis!r} (the study's axis)")
        row.update(axis=flat[axis], device=device_kind(rec), fingerprint=_axis_fingerprint(rec["config"], axis), _rec=rec)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["setting"] = settings(df)
    df["row"] = [" ".join(t for t in (m, v, f"[{s}]" if s else "") if t) for m, v, s in zip(df["method"], df["variant"], df["setting"])]
    return df


def _slope(points: list[tuple[float, float]]) -> float:
    x = np.log2([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def _block(df: pd.DataFrame, dataset: str, backbone: str) -> StudyBlock:
    base_rows = df[(df["method"] == BASELINE_METHOD) & (df["variant"] == "")]
    baseline = base_rows["row"].value_counts().sort_index().idxmax() if len(base_rows) else None
    rows = sorted(set(df["row"]), key=lambda r: (r != baseline, r))
    values = sorted(set(df["axis"]), key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
    block = StudyBlock(dataset, backbone, baseline, rows, values)
    # one record per seed and cell (the newest, should a run have been recorded twice)
    recs = {(r, v): g.sort_values("created", kind="stable").drop_duplicates("seed", keep="last")
            for (r, v), g in df.groupby(["row", "axis"], sort=False)}
    for (r, v), g in recs.items():
        block.devices[(r, v)] = sorted(set(g["device"]))
        block.seeds[(r, v)] = sorted(int(s) for s in g["seed"])
        timed = [(str(d), float(x)) for d, x in zip(g["device"], g.get("train_seconds", [])) if x is not None and math.isfinite(float(x))]
        if timed:
            block.train_seconds[(r, v)] = [x for _, x in timed]
        block.rows_per_example[(r, v)] = max(float((rec.get("cost") or {}).get("rows_per_example") or 1.0) for rec in g["_rec"])
        for device, x in timed:
            block.train_hours[device] = block.train_hours.get(device, 0.0) + x / 3600.0
    for v in values:
        base = recs.get((baseline, v)) if baseline else None
        if base is not None:
            for key, _, scale in STUDY_METRICS:
                vals = [scale * x for x in base[key].astype(float) if math.isfinite(x)] if key in base else []
                if vals:
                    block.baseline_values[(v, key)] = t_interval(vals)
        groups = [(r, [x for x in recs[(r, v)]["_rec"]]) for r in rows if (r, v) in recs]
        de = dee_group(groups)
        for r, g in groups:
            if de is not None:
                block.dee[(r, v)] = row_dee(g, de[1])
            if base is None or r == baseline:
                continue
            mine = recs[(r, v)].set_index("seed")
            theirs = base.set_index("seed")
            seeds = sorted(set(mine.index) & set(theirs.index))
            for key, _, scale in STUDY_METRICS:
                if key not in mine or key not in theirs:
                    continue
                diffs = [(int(s), scale * (float(mine.at[s, key]) - float(theirs.at[s, key]))) for s in seeds]
                diffs = [(s, d) for s, d in diffs if math.isfinite(d)]
                mixed = any(mine.at[s, "device"] != theirs.at[s, "device"] for s, _ in diffs)
                block.gaps[(r, v, key)] = Gap(t_interval([d for _, d in diffs]) if diffs else None, tuple(s for s, _ in diffs), mixed)
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    for r in rows:
        if r == baseline:
            continue
        for key, _, _ in STUDY_METRICS:
            per_seed: dict[int, list[tuple[float, float]]] = {}
            kinds: set[str] = set()  # the device kinds of the records the slope reads
            for v in numeric:
                gap = block.gaps.get((r, v, key))
                if gap is None or gap.interval is None:
                    continue
                mine, theirs = recs[(r, v)].set_index("seed"), recs[(baseline, v)].set_index("seed")
                scale = dict((k, s) for k, _, s in STUDY_METRICS)[key]
                for s in gap.seeds:
                    per_seed.setdefault(s, []).append((float(v), scale * (float(mine.at[s, key]) - float(theirs.at[s, key]))))
                    kinds |= {str(mine.at[s, "device"]), str(theirs.at[s, "device"])}
            slopes = [_slope(p) for p in per_seed.values() if len(p) >= 2]
            block.slopes[(r, key)] = Gap(t_interval(slopes), tuple(sorted(per_seed)), len(kinds) > 1) if slopes else None
    return block


def _cross_cpu(block: StudyBlock, df: pd.DataFrame, repeats: pd.DataFrame) -> None:
    """Fill ``block.cross_cpu`` from the repeats of its cells (a kind that is the study record's own is not a repeat)."""
    keys = [k for k, _, _ in STUDY_METRICS]
    own = df.sort_values("created", kind="stable").drop_duplicates(["row", "axis", "seed"], keep="last").set_index(["row", "axis", "seed"])
    for (r, v, seed), g in repeats.sort_values("created", kind="stable").groupby(["row", "axis", "seed"], sort=True):
        if (r, v, seed) not in own.index:
            continue
        mine = own.loc[(r, v, seed)]
        values = {str(mine["device"]): {k: float(mine[k]) for k in keys if k in mine}}
        for _, rep in g.drop_duplicates("device", keep="last").iterrows():
            values.setdefault(str(rep["device"]), {k: float(rep[k]) for k in keys if k in rep})
        if len(values) < 2:
            continue
        cell = df[(df["row"] == r) & (df["axis"] == v)].drop_duplicates("seed", keep="last")
        sd = {k: float(np.std(cell[k].astype(float), ddof=1)) for k in keys if k in cell and len(cell) >= 2}
        block.cross_cpu.append(CrossCPU(r, v, int(seed), str(mine["device"]), values, sd))


def build_study(records: list[dict[str, Any]], axis: str, name: str, *, description: str = "", missing: list[str] | None = None,
                command: str = "", repeats: list[dict[str, Any]] | None = None, budget: str = "", runs: int = 0) -> Study:
    """The study of ``records`` (completed, validated, each with ``_path``) along config key ``axis``;
    ``repeats``: records of its cells trained again on other kinds of CPU (the cross-CPU table), never
    mixed into the gaps; ``budget``: the data, budget and seeds in words; ``runs``: how many runs the study has."""
    if not records:
        return Study(name, axis, [], description, list(missing or []), command, budget, runs)
    df = _frame(records, axis)
    rep_all = _frame(repeats, axis) if repeats else None
    blocks = []
    for (d, b), g in df.groupby(["dataset", "backbone"], sort=True):
        block = _block(g, d, b)
        if rep_all is not None:
            # a repeat is the study's cell of the same run id and variant (its row label comes from the study's records)
            ids = {(rec["run_id"], v): r for rec, v, r in zip(g["_rec"], g["variant"], g["row"])}
            rep = rep_all.assign(row=[ids.get((rec["run_id"], v)) for rec, v in zip(rep_all["_rec"], rep_all["variant"])])
            rep = rep[rep["row"].notna()]
            _cross_cpu(block, g, rep)
        blocks.append(block)
    return Study(name, axis, blocks, description, list(missing or []), command, budget, runs)


# ------------------------------------------------------------------------------------------------
# rendering


def _fmt(x: float, key: str) -> str:
    return f"{x:+.2f}" if key == "accuracy" else f"{x:+.4f}"


def _interval_text(x: SeedInterval | Gap | None, key: str) -> str:
    """An interval, or a gap or slope (marked where its records ran on several device kinds), as text."""
    iv, mark = (x.interval, MIXED if x.mixed_device else "") if isinstance(x, Gap) else (x, "")
    if iv is None:
        return "—"
    star = "*" if iv.excludes_zero else ""
    return (f"{_fmt(iv.mean, key)} (1 seed)" if iv.n < 2 else f"{_fmt(iv.mean, key)} [{_fmt(iv.low, key)}, {_fmt(iv.high, key)}]{star} ({iv.n})") + mark


def _grouped(labels: list[str]) -> list[str]:
    """``name seed s`` labels as one entry per name with its seeds (``mimo-w8 seeds 0 1 2``), in the order given."""
    seeds: dict[str, list[str]] = {}
    for label in labels:
        name, sep, seed = label.rpartition(" seed ")
        seeds.setdefault(name if sep else label, []).append(seed if sep else "")
    return [f"{n} seed{'s' if len(s) > 1 else ''} {' '.join(s)}" if any(s) else n for n, s in seeds.items()]


def _axis_label(axis: str, value: Any) -> str:
    return f"{axis.split('.')[-1]} {value}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    aligns = ["---"] + ["---:"] * (len(head) - 1)
    return ["| " + " | ".join(head) + " |", "|" + "|".join(aligns) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def render_study_markdown(study: Study) -> str:
    """The study page (Markdown): facts, then per block the baseline's values, one gap table per metric
    (with the slope per doubling), the DEE table and the seeds and devices per cell."""
    axis = study.axis
    lines = [f"# Study: {study.name}", "", f"Generated from the run records by `{study.command or 'python -m benchmark study ' + study.name}`; "
             "do not edit.", ""]
    if study.description:
        lines += [f"- **Study**: {study.description}"]
    if study.budget:
        lines += [f"- **Budget**: {study.budget}"]
    lines += [
        f"- **Axis**: `{axis}`",
        f"- **Gap**: row − {BASELINE_METHOD} at the same {axis.split('.')[-1]}, paired by seed (seed s of the row against seed s of the "
        f"{BASELINE_METHOD} run); mean over the paired seeds with a 95% Student-t interval over them (mean ± t(0.975, n−1)·sd/√n, "
        "n in brackets): it covers training randomness (initialisation, data order, augmentation); both sides see the same test "
        "examples, so test-set sampling is not in it. * = the interval excludes 0; (1 seed): no interval. Acc in percentage points, "
        "NLL in nats, cNLL: NLL over the corrupted cells.",
        f"- **Slope per doubling**: per seed, the least-squares slope of the gap against log2({axis.split('.')[-1]}) over the values that seed "
        "has (2 or more), then the t interval over seeds.",
        f"- **DEE**: deep-ensemble equivalent against the deep-ensemble row at the same {axis.split('.')[-1]} (the leaderboard's procedure: "
        "mean member curve and mean calibrated NLL over seeds, no interval); '< 1' worse than one member, '> M' better than all M.",
        f"- **Devices**: {MIXED} = the paired records of a gap ran on different kinds of CPU (or GPU): fp32 training differs across "
        "instruction sets by more than rounding, so such a gap mixes the two differences; on a slope: its records ran on several kinds.",
    ]
    if study.missing:
        of = f" of {study.runs} runs" if study.runs else ""
        lines.append(f"- **Not finished** ({len(study.missing)}{of}): " + "; ".join(_grouped(study.missing)))
    if not study.blocks:
        lines += ["", "No finished records yet."]
    for block in study.blocks:
        values = block.axis_values
        lines += ["", f"## {block.dataset} / {block.backbone}", ""]
        if block.baseline is None:
            lines += [f"No plain {BASELINE_METHOD} row: no gaps."]
        else:
            lines += [f"**Baseline: {block.baseline}** (mean [95% t interval over seeds] (seeds))", ""]
            head = ["Metric", *(_axis_label(axis, v) for v in values)]
            body = [[label.replace("Δ ", "").replace("(pp)", "(%)"),
                     *(_interval_text(block.baseline_values.get((v, key)), key).replace("+", "") for v in values)] for key, label, _ in STUDY_METRICS]
            lines += _table(head, body)
        others = [r for r in block.rows if r != block.baseline]
        for key, label, _ in STUDY_METRICS:
            if not any((r, v, key) in block.gaps for r in others for v in values):
                continue
            lines += ["", f"### {label}", ""]
            head = ["Row", *(_axis_label(axis, v) for v in values), "slope / doubling"]
            body = [[r, *(_interval_text(block.gaps.get((r, v, key)), key) for v in values), _interval_text(block.slopes.get((r, key)), key)]
                    for r in others]
            lines += _table(head, body)
        if block.dee:
            lines += ["", "### DEE", ""]
            lines += _table(["Row", *(_axis_label(axis, v) for v in values)],
                            [[r, *(block.dee[(r, v)].display if (r, v) in block.dee else "—" for v in values)] for r in block.rows])
            reasons = sorted({d.reason for d in block.dee.values() if d.reason})
            if reasons:
                lines += ["", "n/a: " + "; ".join(reasons)]
        if block.train_seconds:
            lines += _cost_table(block, axis)
        if block.cross_cpu:
            lines += _cross_cpu_table(block, axis)
        lines += ["", "### Seeds and devices per cell", ""]
        lines += _table(["Row", *(_axis_label(axis, v) for v in values)],
                        [[r, *(f"{' '.join(map(str, block.seeds[(r, v)]))} on {', '.join(block.devices[(r, v)])}" if (r, v) in block.devices else "—"
                               for v in values)] for r in block.rows])
    return "\n".join(lines) + "\n"


def _cost_table(block: StudyBlock, axis: str) -> list[str]:
    values, total, per_kind = block.axis_values, sum(block.train_hours.values()), "; ".join(f"{k}: {h:.2f} h" for k, h in sorted(block.train_hours.items()))
    lines = ["", "### Training cost per cell", "",
             "Training seconds per run: mean over the cell's seeds (min-max), wall clock of the run's own training stages as its "
             "record states them (members reused from other runs are counted there; a machine busy with other work makes a run "
             "slower); x rows: the rows a training step processes per image (a MIMO batch repetition of 2 processes each image twice). "
             f"Training time of this block's records: {total:.2f} h ({per_kind}); evaluation is not in it.", ""]
    body = [[r, *(_cost_text(block.train_seconds.get((r, v)), block.rows_per_example.get((r, v), 1.0)) for v in values)] for r in block.rows]
    return lines + _table(["Row", *(_axis_label(axis, v) for v in values)], body)


def _cost_text(secs: list[float] | None, rows_per: float) -> str:
    if not secs:
        return "—"
    if max(secs) == 0.0:  # e.g. a deep ensemble of members trained by other runs
        return "0 s (no training of its own)"
    spread = f" ({min(secs):.0f}-{max(secs):.0f})" if len(secs) > 1 else ""
    return f"{sum(secs) / len(secs):.0f} s{spread}" + (f", x{rows_per:g} rows" if rows_per != 1.0 else "")


def _cross_cpu_table(block: StudyBlock, axis: str) -> list[str]:
    keys = [(k, label.replace("Δ ", "").replace("(pp)", "(%)"), scale) for k, label, scale in STUDY_METRICS if k in ("accuracy", "nll", "cNLL")]
    lines = ["", "### Cross-CPU repeats", "",
             "The same cell (config and seed) trained again on another kind of CPU (`python -m benchmark.tools.cross_cpu`). "
             "**Spread**: max − min over the CPU kinds; **seed SD**: the standard deviation of the same cell over the study's seeds. "
             "A gap smaller than both is explained by neither being held fixed.", ""]
    body = []
    for c in block.cross_cpu:
        cell = f"{c.row}, {_axis_label(axis, c.axis_value)}, seed {c.seed}"
        for kind, vals in c.values.items():
            body.append([cell, kind + (" (the study's record)" if kind == c.study_kind else ""),
                         *(_plain(scale * vals[k], k) if k in vals else "—" for k, _, scale in keys)])
        body.append([cell, "**spread**", *(_plain(scale * c.spread(k), k) for k, _, scale in keys)])
        body.append([cell, "**seed SD**", *(_plain(scale * c.seed_sd[k], k) if k in c.seed_sd else "—" for k, _, scale in keys)])
    return lines + _table(["Cell", "CPU", *(label for _, label, _ in keys)], body)


def _plain(x: float, key: str) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:.2f}" if key == "accuracy" else f"{x:.4f}"


def render_study_csv(study: Study) -> str:
    """Long format: one line per (block, row, axis value, metric) with mean, low, high, n, seeds and device kinds;
    the slope per doubling as axis value ``slope``; DEE as metric ``dee`` (its display in ``text``); the training
    seconds as metric ``train_seconds`` (mean over seeds; low and high: min and max)."""
    out = []
    for b in study.blocks:
        for (r, v, key), gap in b.gaps.items():
            iv = gap.interval
            out.append({"dataset": b.dataset, "backbone": b.backbone, "row": r, "axis": study.axis, "value": v, "metric": key,
                        "mean": iv.mean if iv else math.nan, "low": iv.low if iv else math.nan, "high": iv.high if iv else math.nan,
                        "n": iv.n if iv else 0, "seeds": " ".join(map(str, gap.seeds)), "mixed_device": gap.mixed_device,
                        "devices": "; ".join(b.devices.get((r, v), [])), "text": ""})
        for (r, key), sl in b.slopes.items():
            if sl is not None and (iv := sl.interval) is not None:
                out.append({"dataset": b.dataset, "backbone": b.backbone, "row": r, "axis": study.axis, "value": "slope", "metric": key, "mean": iv.mean,
                            "low": iv.low, "high": iv.high, "n": iv.n, "seeds": " ".join(map(str, sl.seeds)), "mixed_device": sl.mixed_device,
                            "devices": "", "text": ""})
        for (r, v), d in b.dee.items():
            out.append({"dataset": b.dataset, "backbone": b.backbone, "row": r, "axis": study.axis, "value": v, "metric": "dee",
                        "mean": d.value, "low": math.nan, "high": math.nan, "n": len(b.seeds.get((r, v), [])),
                        "seeds": " ".join(map(str, b.seeds.get((r, v), []))), "mixed_device": False, "devices": "; ".join(b.devices.get((r, v), [])),
                        "text": d.display})
        for (r, v), secs in b.train_seconds.items():
            out.append({"dataset": b.dataset, "backbone": b.backbone, "row": r, "axis": study.axis, "value": v, "metric": "train_seconds",
                        "mean": sum(secs) / len(secs), "low": min(secs), "high": max(secs), "n": len(secs),
                        "seeds": " ".join(map(str, b.seeds.get((r, v), []))), "mixed_device": False, "devices": "; ".join(b.devices.get((r, v), [])),
                        "text": f"x{b.rows_per_example.get((r, v), 1.0):g} rows"})
    cols = ["dataset", "backbone", "row", "axis", "value", "metric", "mean", "low", "high", "n", "seeds", "mixed_device", "devices", "text"]
    return pd.DataFrame(out, columns=cols).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_study(study: Study, folder: Path) -> list[Path]:
    """Write ``study.md`` and ``study.csv`` into ``folder``, atomically (the figure:
    :func:`benchmark.leaderboard.study_plot.write_study_figure`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(folder / "study.md", render_study_markdown(study)), atomic_write_text(folder / "study.csv", render_study_csv(study))]
