"""Cross-record quantities of a leaderboard block, computed from the records' prediction sidecars
(numpy only: :mod:`benchmark.evaluation.dee` and :mod:`benchmark.evaluation.paired`):

* **DEE** (Deep-Ensemble Equivalent; Ashukha et al., ICLR 2020): the block's deep-ensemble row
  (:data:`DEE_METHOD`, the most members) gives the curve of calibrated NLL against ensemble size
  from its stored members (:func:`benchmark.evaluation.dee.dee_curve`; one curve per seed,
  averaged over seeds); each row's calibrated NLL (same procedure: validation temperature when every
  record involved has a validation prediction, else test-time cross-validation with the same
  halves; the mean over the row's seeds) is read off it: ``< 1``, a number, or ``> M``.
* **Paired differences** against the block's deterministic row (:data:`BASELINE_METHOD`, the plain
  variant): ``row - deterministic`` in accuracy, NLL, calibrated NLL, Brier and ECE with a 95%
  interval (:func:`benchmark.evaluation.paired.paired_bootstrap`). Seeds are paired by number:
  seed s of the row with seed s of the deterministic row, and the estimate is the mean of the
  per-seed differences. A seed that only one of the two rows has is left out of that row's
  differences (the block's "Unpaired seeds" fact names it); no seed in common gives n/a. With 2
  or more paired seeds the interval adds the seed-to-seed spread of the differences to their
  test-set sampling (a t interval, ``over_seeds="t"``), so it covers training randomness, and a
  difference whose interval excludes 0 is marked :data:`SEED_MARK` (it exceeds the seed spread);
  with one paired seed it is the percentile interval over the test examples, which covers
  test-set sampling only: marked :data:`ONE_SEED_MARK` in the table, ``*`` where it excludes 0.

A row whose records lack a usable sidecar (none, missing, or not matching its sha256: the latter
two are also listed among the leaderboard's problems) gets "n/a" with the reason in the block's
facts, never a value from elsewhere. Results are cached by the sidecars' sha256 (and the number of
resamples), so a build computes each once and the plots reuse them.

Published precision (:func:`published`). The CSV writes these numbers (``dee``, ``d_<metric>``,
``_low``, ``_high``) rounded to :data:`PUBLISHED_DECIMALS` (7) decimal places, and says so in its
``sidecar_decimals`` column, so that the same records give the same file on any CPU. Their last
float64 digits depend on the CPU, not on the records: numpy's float64 ``exp``/``log`` take other
code paths on AVX-512 than on AVX2 (the calibrated NLL, Brier and ECE use them), and OpenBLAS's
matrix products (every resample's sums) sum in a kernel-dependent order. Measured on the three
reference boards (an AVX-512 Xeon against the same machine emulating AVX2 with
``OPENBLAS_CORETYPE=Haswell`` and ``NPY_DISABLE_CPU_FEATURES``): 83 of 165 values differ, by at
most 2.6e-15. A fixed summation order alone cannot remove the ``exp``/``log`` part. Seven decimals
keep all the information the inputs hold: the predictions are stored in float32 (relative
precision 6e-8, so a mean NLL or Brier near 1 is known to about 1e-7), an accuracy difference of
one example is 100/N percentage points (1e-3 for N = 100,000), and the intervals' own Monte Carlo
error is far larger; yet they sit 8 orders above the CPU noise: on the reference boards the
chance that some value lands on the other side of a rounding boundary is about 1e-7 per build.
Decimals, not significant digits: the noise is absolute (it comes from sums of values of order 1),
so a difference close to 0 would keep noise digits under a relative rule. The Markdown, HTML and
LaTeX show 2 to 4 decimals of the unrounded values (:func:`format_difference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..evaluation.calibration import temperature_scale
from ..evaluation.dee import DEECurve, dee_curve, deep_ensemble_equivalent
from ..evaluation.paired import METRICS as PAIRED_METRICS, PairedBootstrap, paired_bootstrap
from ..evaluation.predictions import PredictionsError, load_predictions, sidecar_problem
from .aggregate import SEED_LEVEL
from .mce import BASELINE_METHOD

DEE_METHOD = "deep_ensemble"  # the rows whose stored members give the DEE curve
DEFAULT_RESAMPLES = 1000
CAL_SPLITS, CAL_SEED = 5, 0  # test-time cross-validation, as the records' cal_* metrics
PAIRED_LABELS = {"accuracy": "Δ Acc (pp)", "nll": "Δ NLL", "calibrated_nll": "Δ cal. NLL", "brier": "Δ Brier", "ece": "Δ ECE"}
PAIRED_SCALE = {"accuracy": 100.0}  # accuracy differences in percentage points
NA = "n/a"
EXCLUDES_MARK = "*"  # one paired seed: the test-examples interval excludes 0
SEED_MARK = "†"  # 2+ paired seeds: the interval with the seed-to-seed spread excludes 0
ONE_SEED_MARK = "§"  # a row (or a pairing) of one seed: its interval ignores training randomness
ONE_SEED_LEGEND = (f"{ONE_SEED_MARK} one seed: the row has no interval over seeds, and its paired-difference interval covers "
                   "test-set sampling only, not training randomness.")
INTERVALS = {"fixed": "95% percentile over test examples (1 seed)", "t": "95% t over seeds and test examples",
             "bootstrap": "95% percentile over seeds and test examples"}  # the CSV's d_interval, by over_seeds
PUBLISHED_DECIMALS = 7  # decimals of the CSV's numbers computed here (module docstring: why 7)
SEED_INTERVAL_CSV = f"{100 * SEED_LEVEL:.0f}% Student t over seeds (bounds at {PUBLISHED_DECIMALS} decimals)"  # the CSV's seed_interval
ONE_SEED_CSV = "none: one seed"

_ARRAYS: dict[str, dict[str, np.ndarray]] = {}  # sha256 -> the clean / val arrays used here (one build's records)
_CURVES: dict[tuple, DEECurve] = {}
_CAL: dict[tuple, float] = {}
_PAIRED: dict[tuple, PairedBootstrap] = {}


def clear_cache() -> None:
    """Forget every cached sidecar and result (a new leaderboard build starts from the records)."""
    for cache in (_ARRAYS, _CURVES, _CAL, _PAIRED):
        cache.clear()


def _sha(rec: dict[str, Any]) -> str:
    return str((rec.get("predictions") or {}).get("sha256"))


def unusable(recs: Iterable[dict[str, Any]]) -> str | None:
    """Why these records' sidecars cannot be used (the first reason), or None."""
    for rec in recs:
        why = sidecar_problem(rec, required=True)
        if why:
            return f"{rec.get('run_id', '?')}: {why}"
    return None


def _arrays(rec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The clean and validation arrays of a record's sidecar (float32 as stored), loaded once."""
    key = _sha(rec)
    if key not in _ARRAYS:
        a = load_predictions(rec)
        _ARRAYS[key] = {k: v for k, v in a.items() if k.split("/")[0] in ("clean", "val") and k.count("/") == 1}
    return _ARRAYS[key]


def _has_val(rec: dict[str, Any], members: bool = False) -> bool:
    a = _arrays(rec)
    return "val/targets" in a and ("val/members" in a if members else "val/log_probs" in a)


def _members(rec: dict[str, Any], split: str) -> np.ndarray | None:
    a = _arrays(rec)
    if f"{split}/members" in a:
        return a[f"{split}/members"]
    if int(rec["identity"]["members"]) == 1 and f"{split}/log_probs" in a:
        return a[f"{split}/log_probs"][None]
    return None


# ------------------------------------------------------------------------------------------------
# choosing the reference rows
# ------------------------------------------------------------------------------------------------


def baseline_group(groups: list[tuple[Any, list[dict[str, Any]]]]) -> tuple[Any, list[dict[str, Any]]] | None:
    """The block's deterministic row among ``(key, records)``: the plain variant (no label), most seeds."""
    cands = [(k, recs) for k, recs in groups if recs and all(r["identity"]["method"] == BASELINE_METHOD and int(r["identity"]["members"]) == 1
                                                           for r in recs)]
    if not cands:
        return None
    return sorted(cands, key=lambda kr: (kr[1][0]["identity"]["variant"] != "", -len(kr[1]), str(kr[0])))[0]


def dee_group(groups: list[tuple[Any, list[dict[str, Any]]]]) -> tuple[Any, list[dict[str, Any]]] | None:
    """The block's deep-ensemble row among ``(key, records)``: the most members (then most seeds)."""
    cands = [(k, recs) for k, recs in groups if recs and all(r["identity"]["method"] == DEE_METHOD for r in recs)]
    if not cands:
        return None
    return sorted(cands, key=lambda kr: (-int(kr[1][0]["identity"]["members"]), -len(kr[1]), str(kr[0])))[0]


# ------------------------------------------------------------------------------------------------
# DEE
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DEEResult:
    """A row's DEE (``display``: ``< 1``, a number to 2 decimals, ``> M`` or ``n/a``; ``value``: the
    number, else NaN), its calibrated NLL, and why it is n/a."""

    display: str
    value: float = math.nan
    method_nll: float = math.nan
    reason: str | None = None


def _curve(de_recs: list[dict[str, Any]], use_val: bool) -> DEECurve:
    key = (tuple(sorted(_sha(r) for r in de_recs)), use_val)
    if key not in _CURVES:
        curves = []
        for rec in sorted(de_recs, key=lambda r: r["identity"]["seed"]):
            a = _arrays(rec)
            curves.append(dee_curve(_members(rec, "clean"), a["clean/targets"], _members(rec, "val") if use_val else None,
                                    a["val/targets"] if use_val else None, n_splits=CAL_SPLITS, seed=CAL_SEED))
        mean = tuple(float(np.mean([c.nll[i] for c in curves])) for i in range(len(curves[0].nll)))
        _CURVES[key] = replace(curves[0], nll=mean, nll_std=tuple(float(np.std([c.nll[i] for c in curves])) for i in range(len(mean))))
    return _CURVES[key]


def _calibrated_nll(rec: dict[str, Any], use_val: bool) -> float:
    key = (_sha(rec), use_val)
    if key not in _CAL:
        a = _arrays(rec)
        _CAL[key] = temperature_scale(a["clean/log_probs"], a["clean/targets"], a["val/log_probs"] if use_val else None,
                                      a["val/targets"] if use_val else None, n_splits=CAL_SPLITS, seed=CAL_SEED).nll
    return _CAL[key]


def row_dee(recs: list[dict[str, Any]], de_recs: list[dict[str, Any]] | None) -> DEEResult:
    """The DEE of one row (its records) against the deep-ensemble records ``de_recs``."""
    if not de_recs:
        return DEEResult(NA, reason=f"no {DEE_METHOD} row in this block")
    why = unusable([*de_recs, *recs])
    if why:
        return DEEResult(NA, reason=why)
    try:
        if any(_members(r, "clean") is None for r in de_recs):
            return DEEResult(NA, reason=f"the {DEE_METHOD} sidecar stores no member predictions")
        if len({int(r["identity"]["members"]) for r in de_recs}) != 1:
            return DEEResult(NA, reason=f"the {DEE_METHOD} records differ in members")
        targets = [_arrays(r)["clean/targets"] for r in [*de_recs, *recs]]
        if any(t.shape != targets[0].shape or not np.array_equal(t, targets[0]) for t in targets):
            return DEEResult(NA, reason="the rows were evaluated on different test examples")
        use_val = all(_has_val(r, members=True) for r in de_recs) and all(_has_val(r) for r in recs)
        curve = _curve(de_recs, use_val)
        nll = float(np.mean([_calibrated_nll(r, use_val) for r in recs]))
    except PredictionsError as exc:
        return DEEResult(NA, reason=str(exc))
    d = deep_ensemble_equivalent(nll, curve)
    return DEEResult(d.display, d.value if d.value is not None else math.nan, nll)


# ------------------------------------------------------------------------------------------------
# paired differences
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedResult:
    """A row's paired bootstrap against the baseline (``result``), or why it is n/a (``reason``);
    ``baseline``: this row is the baseline itself; ``seeds``: the seeds paired; ``row_only`` and
    ``baseline_only``: the seeds of one row without a partner in the other (left out)."""

    result: PairedBootstrap | None = None
    reason: str | None = None
    baseline: bool = False
    seeds: tuple[int, ...] = ()
    row_only: tuple[int, ...] = ()
    baseline_only: tuple[int, ...] = ()


def row_paired(recs: list[dict[str, Any]], base_recs: list[dict[str, Any]] | None, n_resamples: int = DEFAULT_RESAMPLES) -> PairedResult:
    """``row - baseline`` with paired-bootstrap intervals, over the seeds both have (seed s with seed s)."""
    if not base_recs:
        return PairedResult(reason=f"no {BASELINE_METHOD} row in this block")
    if {r.get("_path") for r in recs} == {r.get("_path") for r in base_recs}:
        return PairedResult(baseline=True)
    base_by_seed = {int(r["identity"]["seed"]): r for r in base_recs}
    pairs = sorted((int(r["identity"]["seed"]), base_by_seed[int(r["identity"]["seed"])], r) for r in recs
                   if int(r["identity"]["seed"]) in base_by_seed)
    row_seeds = {int(r["identity"]["seed"]) for r in recs}
    unpaired = {"row_only": tuple(sorted(row_seeds - set(base_by_seed))), "baseline_only": tuple(sorted(set(base_by_seed) - row_seeds))}
    if not pairs:
        return PairedResult(reason=f"no seed in common with the {BASELINE_METHOD} row", **unpaired)
    why = unusable([x for _, b, r in pairs for x in (b, r)])
    if why:
        return PairedResult(reason=why)
    seeds = tuple(s for s, _, _ in pairs)
    key = (tuple((_sha(b), _sha(r)) for _, b, r in pairs), int(n_resamples))
    if key not in _PAIRED:
        try:
            arrays = [(_arrays(b), _arrays(r)) for _, b, r in pairs]
        except PredictionsError as exc:
            return PairedResult(reason=str(exc), seeds=seeds, **unpaired)
        for a, b in arrays:
            if a["clean/targets"].shape != b["clean/targets"].shape or not np.array_equal(a["clean/targets"], b["clean/targets"]):
                return PairedResult(reason="evaluated on different test examples than the baseline", seeds=seeds, **unpaired)
        use_val = all("val/log_probs" in a and "val/log_probs" in b and np.array_equal(a["val/targets"], b["val/targets"]) for a, b in arrays)
        _PAIRED[key] = paired_bootstrap(
            [(a["clean/log_probs"], b["clean/log_probs"], a["clean/targets"]) for a, b in arrays],
            val_pairs=[(a["val/log_probs"], b["val/log_probs"], a["val/targets"]) for a, b in arrays] if use_val else None,
            n_resamples=int(n_resamples), seed=0, n_splits=CAL_SPLITS)
    return PairedResult(_PAIRED[key], seeds=seeds, **unpaired)


def published(value: float) -> float:
    """``value`` as the CSV publishes a number computed from the sidecars: rounded to
    :data:`PUBLISHED_DECIMALS` decimal places (``-0.0`` as ``0.0``; NaN kept), the same on every CPU."""
    value = float(value)
    return value if math.isnan(value) else round(value, PUBLISHED_DECIMALS) + 0.0


def computed_columns(columns: Iterable[str]) -> list[str]:
    """The numeric columns among ``columns`` that are computed here: ``dee``, ``d_<metric>``, ``_low``, ``_high``, ``_seed_std``."""
    numeric = {"dee", *(f"d_{m}{s}" for m in PAIRED_METRICS for s in ("", "_low", "_high", "_seed_std"))}
    return [c for c in columns if c in numeric]


def format_difference(metric: str, d: Any, covers_seeds: bool = False) -> str:
    """``+0.0123 [+0.0050, +0.0190]*`` (accuracy in percentage points, 2 decimals; others 4); where
    the interval excludes 0: ``*`` (``covers_seeds`` False: test-set sampling only) or
    :data:`SEED_MARK` (the interval includes the seed-to-seed spread)."""
    scale = PAIRED_SCALE.get(metric, 1.0)
    digits = 2 if metric in PAIRED_SCALE else 4
    text = f"{scale * d.diff:+.{digits}f} [{scale * d.low:+.{digits}f}, {scale * d.high:+.{digits}f}]"
    return text + ((SEED_MARK if covers_seeds else EXCLUDES_MARK) if d.excludes_zero else "")


def paired_marks(one_seed: bool, several: bool) -> str:
    """What the paired table's marks mean, for a block with rows of one paired seed and/or several."""
    parts = []
    if several:
        parts.append(f"2+ seeds: seed s paired with seed s, t interval over the seeds and the test examples (the seed-to-seed spread "
                     f"included), {SEED_MARK} = it excludes 0: the difference exceeds the seed spread")
    if one_seed:
        parts.append(f"{ONE_SEED_MARK} 1 seed: percentile interval over the test examples, which covers test-set sampling only, "
                     f"not training randomness, {EXCLUDES_MARK} = it excludes 0")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# a block's table
# ------------------------------------------------------------------------------------------------


@dataclass
class PairedTable:
    """The paired-difference table of a block: ``header`` (the procedure in one line), ``rows``:
    (row label, cells by metric and ``"seeds"``: the seeds paired) in table order, ``baseline``
    (its label), ``notes`` (n/a reasons) and ``marks`` (what the marks mean: :func:`paired_marks`)."""

    header: str
    baseline: str | None
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    marks: str = ""


def _row_records(row: pd.Series, frame: pd.DataFrame, by_path: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    mask = np.ones(len(frame), dtype=bool)
    for k in ("method", "variant", "setting"):
        mask &= (frame[k] == row[k]).to_numpy()
    return [by_path[p] for p in frame.loc[mask, "path"] if p in by_path]


def attach_comparisons(table: pd.DataFrame, frame: pd.DataFrame, records: list[dict[str, Any]], label: Any,
                       n_resamples: int = DEFAULT_RESAMPLES) -> tuple[pd.DataFrame, PairedTable, list[tuple[str, str]]]:
    """Add ``dee``, ``dee_display`` and, per paired metric ``m``, ``d_m``, ``d_m_low``, ``d_m_high``,
    ``d_m_excl`` and ``d_m_display``, then ``d_seeds`` (the seeds paired), ``d_interval`` (which
    interval: :data:`INTERVALS`) and ``d_m_seed_std`` (std of the per-seed differences) to the
    measured rows of ``table``; return it, the block's :class:`PairedTable` and facts. ``label(row)``
    names a row."""
    by_path = {str(r.get("_path")): r for r in records}
    measured = table["kind"] == "measured"
    groups = [(i, _row_records(row, frame, by_path)) for i, row in table[measured].iterrows()]
    base = baseline_group(groups)
    de = dee_group(groups)
    base_recs = base[1] if base else None
    de_recs = de[1] if de else None
    for col in ("dee_display", *(f"d_{m}_display" for m in PAIRED_METRICS)):
        table[col] = None
    for col in ("dee", *(f"d_{m}{s}" for m in PAIRED_METRICS for s in ("", "_low", "_high"))):
        table[col] = math.nan
    for m in PAIRED_METRICS:
        table[f"d_{m}_excl"] = None
    table["d_seeds"], table["d_interval"] = None, None
    for m in PAIRED_METRICS:
        table[f"d_{m}_seed_std"] = math.nan
    notes: list[tuple[str, str]] = []  # (reason, what is n/a)
    unpaired: list[str] = []
    n_examples, n_seeds, n_res = set(), set(), set()
    rows = []
    base_label = label(table.loc[base[0]]) if base else None
    for i, recs in groups:
        name = label(table.loc[i])
        d = row_dee(recs, de_recs)
        table.at[i, "dee"], table.at[i, "dee_display"] = d.value, d.display
        if d.reason and de_recs:
            notes.append((d.reason, f"DEE of {name}"))
        p = row_paired(recs, base_recs, n_resamples)
        cells = {"seeds": str(len(base_recs or ())) if p.baseline else
                 f"{len(p.seeds)}{f' {ONE_SEED_MARK}' if len(p.seeds) == 1 else ''}" if p.result is not None else NA}
        for m in PAIRED_METRICS:
            if p.baseline:
                cells[m] = "baseline"
            elif p.result is None:
                cells[m] = NA
            else:
                diff = p.result.differences[m]
                scale = PAIRED_SCALE.get(m, 1.0)
                table.at[i, f"d_{m}"], table.at[i, f"d_{m}_low"], table.at[i, f"d_{m}_high"] = (scale * diff.diff, scale * diff.low,
                                                                                               scale * diff.high)
                table.at[i, f"d_{m}_excl"] = diff.excludes_zero
                table.at[i, f"d_{m}_seed_std"] = scale * diff.seed_std
                cells[m] = format_difference(m, diff, p.result.covers_seeds)
            table.at[i, f"d_{m}_display"] = cells[m]
        if p.result is not None:
            n_examples.update(p.result.n_examples)
            n_seeds.add(p.result.n_seeds)
            n_res.add(p.result.n_resamples)
            table.at[i, "d_seeds"] = " ".join(map(str, p.seeds))
            table.at[i, "d_interval"] = INTERVALS[p.result.over_seeds]
        if p.reason and base_recs:
            notes.append((p.reason, f"paired differences of {name}"))
        if (p.row_only or p.baseline_only) and base_recs and not p.baseline:
            left = [f"seed{'s' * (len(s) > 1)} {' '.join(map(str, s))} ({who} only)" for s, who in ((p.row_only, name), (p.baseline_only, base_label))
                    if s]
            unpaired.append(f"{name}: {' and '.join(left)} left out" + (f", paired over seeds {' '.join(map(str, p.seeds))}" if p.seeds else ""))
        rows.append((name, cells))
    if n_examples:
        ex = ", ".join(f"{n:,}" for n in sorted(n_examples))
        header = (f"paired bootstrap over {ex} test examples, {', '.join(map(str, sorted(n_res)))} resamples, "
                  f"{', '.join(map(str, sorted(n_seeds)))} seed(s)")
    else:
        header = "paired bootstrap: no row could be paired with the baseline"
    marks = paired_marks(1 in n_seeds, any(n > 1 for n in n_seeds))
    facts = []
    if de_recs:
        m_de = int(de_recs[0]["identity"]["members"])
        facts.append(("DEE", f"deep-ensemble equivalent: members of {label(table.loc[de[0]])} (curve of 1..{m_de} members from its stored "
                             "member predictions) whose calibrated NLL equals the row's, interpolated; '< 1' worse than one member, "
                             f"'> {m_de}' better than all {m_de}; n/a: no usable sidecar"))
    else:  # the column is n/a in every row for this reason, not for want of stored predictions
        facts.append(("DEE", f"n/a in every row: no {DEE_METHOD} rows in this block (the DEE curve is built from a "
                             f"{DEE_METHOD} row's stored member predictions)"))
    if base_recs:
        facts.append(("Paired differences", f"row - {base_label}, {header}; 95% intervals{f': {marks}' if marks else ''} "
                                            "(table below the main one)"))
        if unpaired:
            facts.append(("Unpaired seeds", f"seeds are paired by number with the {base_label} row; " + "; ".join(unpaired)))
    else:
        facts.append(("Paired differences", f"none: no {BASELINE_METHOD} row in this block to compare with"))
    by_reason: dict[str, list[str]] = {}
    for reason, what in notes:
        by_reason.setdefault(reason, []).append(what)
    lines = [f"{', '.join(whats)}: n/a ({reason})" for reason, whats in by_reason.items()]
    if lines:
        facts.append(("n/a", "; ".join(lines)))
    return table, PairedTable(header, base_label, rows if base_recs else [], lines, marks), facts


def cached_paired(groups: list[tuple[str, list[dict[str, Any]]]]) -> list[tuple[str, PairedResult]]:
    """(row label, paired result) for the plot: against the baseline among ``groups``, reusing the
    build's cached bootstraps (any number of resamples computed; else the default)."""
    base = baseline_group(groups)
    out = []
    for name, recs in groups:
        if base is None:
            out.append((name, PairedResult(reason=f"no {BASELINE_METHOD} row")))
            continue
        pairs = sorted((int(r["identity"]["seed"]), r) for r in recs)
        base_by_seed = {int(r["identity"]["seed"]): r for r in base[1]}
        shas = tuple((_sha(base_by_seed[s]), _sha(r)) for s, r in pairs if s in base_by_seed)
        hit = [v for k, v in _PAIRED.items() if k[0] == shas]
        if hit and unusable([x for s, r in pairs if s in base_by_seed for x in (base_by_seed[s], r)]) is None:
            out.append((name, PairedResult(hit[-1], seeds=tuple(s for s, _ in pairs if s in base_by_seed),
                                           row_only=tuple(s for s, _ in pairs if s not in base_by_seed),
                                           baseline_only=tuple(sorted(set(base_by_seed) - {s for s, _ in pairs})))))
        else:
            out.append((name, row_paired(recs, base[1])))
    return out
