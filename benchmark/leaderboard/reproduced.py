"""Your rows beside the project's published records of the same suite (the "reference",
``results/reference/runs/<suite>/``): per row present on both sides, each main metric's mean over
your seeds, the reference's mean over its seeds, the difference, the reference's seed spread and
whether your mean lies within it; the rows of only one side; each side's CPU and whether the
configs agree.

Rows are matched as a board groups them: same suite, dataset and backbone block, same method,
variant and setting label (:func:`benchmark.leaderboard.frame.settings`). "Within the seed
spread" means ``min <= yours <= max`` over the reference's seeds, and is decided only with at least
two reference seeds: one seed has no spread to compare with. fp32 training is not bit-identical
across CPU instruction sets, so the CPU of each side (the records' ``provenance``) is named.

The comparison is kept at full precision (:func:`reproduced_for`, ``reproduced.csv``) and rounded
only when the Markdown and HTML section is rendered (:func:`reproduced_markdown`,
:func:`reproduced_html`), in the formats of :mod:`.render`.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..records import load_records
from .aggregate import aggregate
from .boards import Block, SuiteBoard, _reason, row_label
from .columns import Column, metric_columns
from .mce import records_frame
from .render import FORMATS, facts_html

# The metrics compared (when the board has their column): clean accuracy, NLL, ECE, the corrupted
# accuracy and NLL summaries, and the calibrated NLL.
MAIN_METRICS = ("accuracy", "nll", "ece", "cA", "cNLL", "cal_nll")
ROW_KEYS = ("method", "variant", "setting")
NOT_RECORDED = "not recorded"
# provenance keys that may hold the CPU's model (a text, or an object with one of MODEL_KEYS) and its instruction set
CPU_KEYS = ("cpu", "cpu_model")
MODEL_KEYS = ("model", "model_name", "name")
ISA_KEYS = ("isa", "instruction_set", "capability")


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a row on both sides: your mean (over ``n`` seeds), the reference's mean, sample
    std (ddof=1), min and max over its ``reference_n`` seeds; NaN where a side lacks the metric."""

    key: str
    mine: float
    n: int
    reference: float
    reference_n: int
    reference_std: float
    reference_min: float
    reference_max: float

    @property
    def diff(self) -> float:
        """Yours minus the reference's (NaN when either is absent)."""
        return self.mine - self.reference

    @property
    def within(self) -> bool | None:
        """Whether your mean lies in the reference's min-max over its seeds; None with fewer than
        two reference seeds or a value absent on either side."""
        if self.reference_n < 2 or math.isnan(self.mine) or math.isnan(self.reference_min):
            return None
        return bool(self.reference_min <= self.mine <= self.reference_max)


@dataclass(frozen=True)
class ReproducedRow:
    """A row present on both sides."""

    method: str
    variant: str
    setting: str
    seed_list: str  # your seeds, space-separated
    reference_seed_list: str
    metrics: list[MetricComparison]
    config_differs: list[str]  # config keys whose value differs between the two sides' records ([] when alike)

    @property
    def label(self) -> str:
        return row_label({"method": self.method, "variant": self.variant, "setting": self.setting})


@dataclass(frozen=True)
class OneSided:
    """A row of only one side, with that side's means (``metrics``: key -> mean)."""

    method: str
    variant: str
    setting: str
    seed_list: str
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return row_label({"method": self.method, "variant": self.variant, "setting": self.setting})


@dataclass
class ReproducedBlock:
    """One (dataset, backbone) block: its compared columns, the matched rows and the one-sided ones."""

    dataset: str
    backbone: str
    columns: list[Column]
    rows: list[ReproducedRow] = field(default_factory=list)
    not_in_reference: list[OneSided] = field(default_factory=list)  # your rows the reference lacks
    not_reproduced: list[OneSided] = field(default_factory=list)  # the reference's rows you lack
    cpu: str = NOT_RECORDED  # your records' CPU(s)
    reference_cpu: str = NOT_RECORDED

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.backbone}"


@dataclass
class Reproduced:
    """A suite's comparison with the reference records under ``reference`` (a folder)."""

    suite: str
    reference: str
    blocks: list[ReproducedBlock]
    problems: list[tuple[str, str]] = field(default_factory=list)  # reference records left out: (file, reason)


# ------------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A non-empty text (a list joined by spaces; a mapping of flags: the names of the true ones, sorted,
    so that a record read back from JSON names the same kind as the live machine), else None."""
    if isinstance(value, dict):
        value = sorted(k for k, v in value.items() if v is True)
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    return (str(value).strip() or None) if value is not None else None


def cpu_kind(rec: dict[str, Any]) -> str | None:
    """The CPU a record was made on, from its provenance: ``provenance.cpu`` (a text, or an object with
    a model and an instruction set) or ``provenance.cpu_model`` (with ``cpu_isa`` / ``cpu_capability``
    beside it), as ``model (instruction set)``; None when the record names none."""
    prov = rec.get("provenance") if isinstance(rec.get("provenance"), dict) else {}
    model = isa = None
    for key in CPU_KEYS:
        value = prov.get(key)
        if isinstance(value, dict):
            model = model or next((_text(value.get(k)) for k in MODEL_KEYS if _text(value.get(k))), None)
            isa = isa or next((_text(value.get(k)) for k in ISA_KEYS if _text(value.get(k))), None)
        elif model is None:
            model = _text(value)
    isa = isa or next((_text(prov.get(f"cpu_{k}")) for k in ISA_KEYS if _text(prov.get(f"cpu_{k}"))), None)
    if model is None:
        return None
    return f"{model} ({isa})" if isa else model


def cpus(records: Iterable[dict[str, Any]]) -> str:
    """The distinct CPUs of ``records`` (``not recorded`` for records that name none)."""
    kinds = sorted({cpu_kind(r) or NOT_RECORDED for r in records})
    return "; ".join(kinds) if kinds else NOT_RECORDED


# ------------------------------------------------------------------------------------------------
# matching
# ------------------------------------------------------------------------------------------------


def _mask(frame: pd.DataFrame, key: tuple[str, ...]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in zip(ROW_KEYS, key):
        mask &= (frame[k] == v).to_numpy()
    return mask


def _value(row: pd.Series | None, key: str) -> float:
    v = row.get(key) if row is not None else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def differing_keys(fingerprints: Iterable[str]) -> list[str]:
    """The config keys whose values are not the same in every one of ``fingerprints``
    (:func:`benchmark.leaderboard.frame.config_fingerprint`)."""
    flats = [json.loads(p) for p in sorted(set(fingerprints))]
    if len(flats) < 2:
        return []
    missing = object()
    return sorted(k for k in {k for f in flats for k in f} if any(f.get(k, missing) != flats[0].get(k, missing) for f in flats[1:]))


def compare_metric(key: str, mine: pd.Series, ref: pd.Series, ref_values: np.ndarray) -> MetricComparison:
    vals = ref_values[~np.isnan(ref_values)]
    n = _value(mine, f"{key}_n")
    return MetricComparison(key, _value(mine, key), 0 if math.isnan(n) else int(n),
                            _value(ref, key), len(vals), float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                            float(vals.min()) if len(vals) else math.nan, float(vals.max()) if len(vals) else math.nan)


def _one_sided(row: pd.Series, keys: Iterable[str]) -> OneSided:
    return OneSided(str(row["method"]), str(row["variant"]), str(row["setting"]), str(row["seed_list"]), {k: _value(row, k) for k in keys})


def compare_block(block: Block | None, ref_frame: pd.DataFrame, ref_records: list[dict[str, Any]], dataset: str, backbone: str) -> ReproducedBlock:
    """The comparison of your ``block`` (None: you have no records of this dataset and backbone) with the
    reference's per-record rows ``ref_frame`` of the same block and their records."""
    columns = [c for c in block.columns if c.key in MAIN_METRICS] if block is not None else \
        [c for c in metric_columns() if c.key in MAIN_METRICS and c.key in ref_frame and ref_frame[c.key].notna().any()]
    keys = [c.key for c in columns]
    mine = block.table[block.table["kind"] == "measured"] if block is not None else pd.DataFrame(columns=[*ROW_KEYS, "seed_list"])
    ref = aggregate(ref_frame) if len(ref_frame) else pd.DataFrame(columns=[*ROW_KEYS, "seed_list"])
    ref_by = {tuple(str(r[k]) for k in ROW_KEYS): r for _, r in ref.iterrows()}
    out = ReproducedBlock(dataset, backbone, columns, cpu=cpus(block.records) if block is not None else NOT_RECORDED,
                          reference_cpu=cpus(ref_records))
    for _, row in mine.iterrows():
        key = tuple(str(row[k]) for k in ROW_KEYS)
        if key not in ref_by:
            out.not_in_reference.append(_one_sided(row, keys))
            continue
        sub = ref_frame[_mask(ref_frame, key)]
        fingerprints = list(block.frame.loc[_mask(block.frame, key), "fingerprint"]) + list(sub["fingerprint"])
        out.rows.append(ReproducedRow(*key, str(row["seed_list"]), str(ref_by[key]["seed_list"]),
                                      [compare_metric(k, row, ref_by[key], sub[k].astype(float).to_numpy() if k in sub else np.array([]))
                                       for k in keys],
                                      differing_keys(fingerprints)))
    matched = {(r.method, r.variant, r.setting) for r in out.rows}
    out.not_reproduced = [_one_sided(r, keys) for key, r in sorted(ref_by.items()) if key not in matched]
    return out


def reproduced_for(board: SuiteBoard, reference_dir: Path | str | None, results_dir: Path | str | None = None) -> Reproduced | None:
    """``board`` compared with the completed records of its suite under ``reference_dir/<suite>``;
    None (no section) without ``reference_dir``, when it holds no records of the suite, or when it is
    the folder the board was built from (``results_dir``: the reference boards themselves)."""
    if reference_dir is None:
        return None
    folder = Path(reference_dir) / board.suite
    if results_dir is not None and Path(reference_dir).resolve() == Path(results_dir).resolve():
        return None
    loaded = load_records(folder)
    records = [r for r in loaded.records if r["identity"]["suite"] == board.suite]
    if not records and not loaded.problems:
        return None
    problems = list(loaded.problems)
    frame = records_frame(records, problems)
    blocks = {(b.dataset, b.backbone): b for b in board.blocks}
    ref_blocks = {k: g.reset_index(drop=True) for k, g in frame.groupby(["dataset", "backbone"], sort=True)} if len(frame) else {}
    out = []
    for dataset, backbone in sorted(set(blocks) | set(ref_blocks)):
        sub = ref_blocks.get((dataset, backbone), frame.iloc[0:0])
        paths = set(sub["path"]) if len(sub) else set()
        out.append(compare_block(blocks.get((dataset, backbone)), sub, [r for r in records if r.get("_path") in paths], dataset, backbone))
    return Reproduced(board.suite, str(folder), out, sorted((p, _reason(p, why)) for p, why in problems))


# ------------------------------------------------------------------------------------------------
# rendering (rounded here, in the formats of :mod:`.render`)
# ------------------------------------------------------------------------------------------------

REPRODUCED_TITLE = "Against the reference records"
REPRODUCED_LINKS = (("#reproduced", "against the reference"), ("reproduced.csv", "its CSV"))  # the page's links to the section
ONE_SEED = "1 reference seed: no seed spread to compare with"
CPU_NOTE = ("fp32 training is not bit-identical across CPU instruction sets (measured on the quick suite: up to 1.5 pp in "
            "clean accuracy between an AVX2 and an AVX-512 CPU).")


def reproduced_intro(rep: Reproduced) -> str:
    return (f"Your rows beside the project's published records of suite {rep.suite} ({rep.reference}), matched by method, variant "
            "and setting within each dataset and backbone. Yours: the mean over your seeds; reference: the mean ± sample std "
            "[min–max] over its seeds; Δ = yours − reference (accuracy in percentage points); within: your mean lies in the "
            "reference's min–max over its seeds (decided only with 2 or more reference seeds).")


def _diff_label(col: Column) -> str:
    return f"Δ {col.label.removesuffix(' (%)')} (pp)" if col.kind == "pct" else f"Δ {col.label}"


def _signed(v: float, kind: str) -> str:
    """``v`` in ``kind``'s format with its sign (none when it rounds to zero); ``—`` when absent."""
    if math.isnan(v):
        return "—"
    text = FORMATS[kind](abs(v))
    return text if not any(ch in "123456789" for ch in text) else ("-" if v < 0 else "+") + text


def reproduced_verdict(row: ReproducedRow, columns: list[Column]) -> str:
    """Whether the row lies within the reference's seed spread, over the metrics that can say."""
    labels = {c.key: c.label for c in columns}
    decided = [(labels[m.key], m.within) for m in row.metrics if m.within is not None]
    if not decided:
        return ONE_SEED if max((m.reference_n for m in row.metrics), default=0) == 1 else "—"
    outside = [label for label, ok in decided if not ok]
    if not outside:
        return f"within in all {len(decided)} metrics"
    return f"outside: {', '.join(outside)}; within: {len(decided) - len(outside)} of {len(decided)} metrics"


def reproduced_cells(block: ReproducedBlock) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one block's rows present on both sides."""
    header = ["Method", "Variant", "Setting", "Your seeds", "Reference seeds"]
    for c in block.columns:
        header += [f"{c.label} yours", f"{c.label} reference", _diff_label(c)]
    header.append("Within the reference's seed spread")
    kinds = {c.key: c.kind for c in block.columns}
    rows = []
    for r in block.rows:
        cells = [r.method, r.variant or "—", r.setting or "—", r.seed_list, r.reference_seed_list]
        for m in r.metrics:
            fmt = FORMATS[kinds[m.key]]
            ref = "—" if math.isnan(m.reference) else fmt(m.reference)
            if m.reference_n > 1:
                ref += f" ± {fmt(m.reference_std)} [{fmt(m.reference_min)}–{fmt(m.reference_max)}]"
            diff = _signed(m.diff, kinds[m.key])
            if m.within is not None:
                diff += " (within)" if m.within else " (outside)"
            cells += ["—" if math.isnan(m.mine) else fmt(m.mine), ref, diff]
        cells.append(reproduced_verdict(r, block.columns))
        rows.append(cells)
    if not any(r.setting for r in block.rows):
        header.pop(2)
        rows = [r[:2] + r[3:] for r in rows]
    return header, rows


def reproduced_facts(block: ReproducedBlock) -> list[tuple[str, str]]:
    """Each side's CPU, whether the configs agree, and the rows of only one side."""
    facts = [("CPU", f"yours: {block.cpu}; reference: {block.reference_cpu}. {CPU_NOTE}")]
    if block.rows:
        differs = [f"{r.label} ({', '.join(r.config_differs)})" for r in block.rows if r.config_differs]
        facts.append(("Config", "differs from the reference's for: " + "; ".join(differs) if differs
                      else "the same as the reference's for every row compared"))
    if block.not_in_reference:
        facts.append(("Not in the reference", ", ".join(r.label for r in block.not_in_reference)))
    if block.not_reproduced:
        facts.append(("Not reproduced here", ", ".join(r.label for r in block.not_reproduced)))
    return facts


def reproduced_markdown(rep: Reproduced) -> str:
    """The Markdown section "Against the reference records"."""
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = [f"## {REPRODUCED_TITLE}", "", reproduced_intro(rep)]
    for block in rep.blocks:
        out += ["", f"### {block.title}", ""] + [f"- **{k}**: {v}" for k, v in reproduced_facts(block)]
        if block.rows:
            header, rows = reproduced_cells(block)
            first = len(header) - 3 * len(block.columns) - 1  # identity columns left, values right, the verdict left
            out += ["", "| " + " | ".join(esc(h) for h in header) + " |",
                    "|" + "|".join("---" if i < first or i == len(header) - 1 else "---:" for i in range(len(header))) + "|"]
            out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    if rep.problems:
        out += ["", "Reference records left out:", ""] + [f"- `{p}`: {why}" for p, why in rep.problems]
    return "\n".join(out)


def reproduced_html(rep: Reproduced) -> str:
    """The section "Against the reference records" as HTML (``id="reproduced"``)."""
    e = html.escape
    out = [f'<section id="reproduced"><h2>{e(REPRODUCED_TITLE)}</h2><p>{e(reproduced_intro(rep))}</p>']
    for block in rep.blocks:
        out.append(f"<h3>{e(block.title)}</h3>{facts_html(reproduced_facts(block))}")
        if block.rows:
            header, rows = reproduced_cells(block)
            out.append('<div class="scroll"><table class="paired reproduced"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in header)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</tbody></table></div>")
    if rep.problems:
        out.append("<p>Reference records left out:</p><ul>" + "".join(f"<li><code>{e(p)}</code>: {e(why)}</li>" for p, why in rep.problems) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


REPRODUCED_CSV_KEYS = ("suite", "dataset", "backbone", "method", "variant", "setting", "status", "seed_list", "reference_seed_list")


def render_reproduced_csv(rep: Reproduced) -> str:
    """``reproduced.csv``: one line per row of either side at full precision (status ``both``, ``not in
    the reference`` or ``not reproduced here``); per main metric yours, its seed count, the reference's
    mean, std, min, max and seed count, the difference and the within-spread verdict (empty: not
    decided); the configs' differing keys and each side's CPU."""
    rows = []
    for b in rep.blocks:
        base = {"suite": rep.suite, "dataset": b.dataset, "backbone": b.backbone, "cpu": b.cpu, "reference_cpu": b.reference_cpu}
        for r in b.rows:
            row = {**base, "method": r.method, "variant": r.variant, "setting": r.setting, "status": "both", "seed_list": r.seed_list,
                   "reference_seed_list": r.reference_seed_list, "config_differs": " ".join(r.config_differs)}
            for m in r.metrics:
                row.update({m.key: m.mine, f"{m.key}_n": m.n, f"{m.key}_reference": m.reference, f"{m.key}_reference_n": m.reference_n,
                            f"{m.key}_reference_std": m.reference_std, f"{m.key}_reference_min": m.reference_min,
                            f"{m.key}_reference_max": m.reference_max, f"{m.key}_diff": m.diff, f"{m.key}_within": m.within})
            rows.append(row)
        for status, side, suffix in (("not in the reference", b.not_in_reference, ""), ("not reproduced here", b.not_reproduced, "_reference")):
            for r in side:
                row = {**base, "method": r.method, "variant": r.variant, "setting": r.setting, "status": status,
                       "seed_list" if not suffix else "reference_seed_list": r.seed_list}
                row.update({f"{k}{suffix}": v for k, v in r.metrics.items()})
                rows.append(row)
    per_metric = [f"{k}{s}" for k in MAIN_METRICS for s in ("", "_n", "_reference", "_reference_n", "_reference_std", "_reference_min",
                                                             "_reference_max", "_diff", "_within")]
    columns = [*REPRODUCED_CSV_KEYS, *per_metric, "config_differs", "cpu", "reference_cpu"]
    out = pd.DataFrame(rows, columns=columns)
    counts = [k for k in per_metric if k.endswith("_n")]
    out[counts] = out[counts].astype("Int64")  # seed counts as integers, empty where the side lacks the row
    return out.to_csv(index=False, lineterminator="\n")
