"""Run configs: TOML files, ``--set key=value`` overrides, validation with the valid choices.

A run config has these tables (``None``/absent means "use the default"):

```toml
[run]       # method, dataset, backbone, seed, suite
[method]    # the method's own options (see its Options dataclass), e.g. members = 3
[backbone]  # the backbone's options, e.g. width = 16
[train]     # TrainConfig fields (below)
[eval]      # batch_size, corruptions, corruption_subset, test_subset, ood ...
[data]      # val_size, download, train_subset, subset_seed
```

A suite file adds ``[defaults]`` (a run config applied to every run), ``seeds`` and a list of
``[[runs]]`` tables, each a partial run config (its ``name`` is the run's label).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


PRECISIONS = ("fp32", "bf16")
# "auto": bf16 where a measured probe of the run's own step finds it faster, else fp32 (benchmark.training.precision)
TRAIN_PRECISIONS = (*PRECISIONS, "auto")
# Which train keys shape a run (its id, benchmark.runner.run_id_of, and its leaderboard row,
# benchmark.leaderboard.frame.config_fingerprint):
# - keys added after runs were recorded, and the value that means the earlier behaviour (in the id only when set
#   to something else): no ghost BatchNorm, the default crop, weight decay on normalisation layers;
TRAIN_KEYS_ADDED = {"bn_group": 0, "crop_pad": None, "norm_weight_decay": None}
# - keys that choose how the arithmetic is scheduled, not what is computed (memory layout, kernel fusion): hashed at
#   their original defaults, so a run keeps its id whichever the execution; their effect is float reassociation.
EXECUTION_TRAIN = {"channels_last": False, "compile": False}
SCHEDULES = ("cosine", "step", "linear", "cyclic_cosine")
TRAIN_LOGS = ("none", "tensorboard")


@dataclass
class TrainConfig:
    """Optimisation settings of one stage. ``lr`` is the learning rate at ``batch_size``.

    ``schedule``: after ``warmup_epochs``, ``cosine`` and ``linear`` decay to ``final_lr_fraction``
    of ``lr`` once; ``step`` multiplies by ``gamma`` at each of ``milestones`` (epochs);
    ``cyclic_cosine`` restarts a cosine decay (from ``lr`` to ``final_lr_fraction * lr``) at each
    of ``milestones`` (epochs), so k milestones make k + 1 cycles (Huang et al. 2017's snapshot
    schedule; no milestones: one cosine cycle).

    ``crop_pad`` and ``norm_weight_decay`` are ``None`` unless a recipe sets them (None: the
    behaviour of the runs recorded before they existed, whose run ids they leave unchanged):
    uncertainty-baselines' CIFAR pipeline pads 2 px (``crop_pad = 2``) and its ImageNet scripts
    put L2 on kernels and biases only (``norm_weight_decay = 0.0``).
    ``bn_group``: ghost BatchNorm: in training, every BatchNorm layer normalises each group of
    ``bn_group`` rows (as the layers see them: tiled or repeated rows counted) with the group's own
    statistics, the same groups on 1 or N processes (uncertainty-baselines' per-core batch,
    ``per_core_batch_size``); 0: the whole batch (``benchmark.training.ghost_norm``).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.2
    final_lr_fraction: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False  # torch.compile the training forward (its compile time shows in first_step_seconds)
    augment: bool = True
    crop_pad: int | None = None  # random-crop padding of device-held training images, px (a shift of +-crop_pad); None: 4
    norm_weight_decay: float | None = None  # weight decay of normalisation scales and offsets; None: weight_decay; 0: kernels and biases only
    nan_check_every: int = 50
    bn_group: int = 0  # rows per BatchNorm group in training (ghost BatchNorm; 0: the whole batch)
    log: str = "none"  # training curves: "none", or "tensorboard" (event files under the run's checkpoint folder; extra plures[tensorboard])

    def validate(self) -> None:
        """Every field's type and range (:func:`check_section`); a bad one raises ConfigError naming it."""
        check_section("train", dataclasses.asdict(self))


@dataclass
class RunSection:
    method: str = "deterministic"
    dataset: str = "cifar10-jpeg"
    backbone: str = "resnet20"
    seed: int = 0
    suite: str = "adhoc"
    name: str = ""


PREDICTIONS_DTYPES = ("float32", "float16")  # eval.predictions_dtype


@dataclass
class EvalSection:
    batch_size: int = 1000
    precision: str | None = None  # None: the training precision
    corruptions: str = "none"  # "none", "regenerated", "official", or a folder path
    corruption_set: str = "benchmark15"
    corruption_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    corruption_subset: int = 0  # 0: all test images; N: a seeded random sample of N test images (corruption_seed), the same in every cell
    corruption_seed: int = 0
    test_subset: int = 0  # 0: the whole clean test set; N: a seeded sample of N test images, stratified by class (test_subset_seed)
    test_subset_seed: int = 0
    ood: list[str] = field(default_factory=list)
    latency_repeats: int = 5
    latency_batch: int = 512
    predictions: bool = True  # store the predictions beside each record (a .predictions.npz sidecar; benchmark.evaluation.predictions)
    predictions_dtype: str = "float32"  # the sidecar's log-probabilities: float32 (rescoring reproduces the metrics) or float16 (half the size)


@dataclass
class DataSection:
    val_size: int = 0
    download: bool = True
    train_subset: int = 0  # 0: every training image; N: a seeded sample of N, stratified by class, taken after the validation hold-out
    subset_seed: int = 0  # seed of the training subset (the same for every run seed, so ensemble members share it)


SECTIONS: dict[str, type] = {"run": RunSection, "train": TrainConfig, "eval": EvalSection, "data": DataSection}
FREE_SECTIONS = ("method", "backbone")  # validated by the method / backbone themselves


class ConfigError(ValueError):
    """A config key or value that is not valid; the message lists the valid choices."""


# ---------------------------------------------------------------------------------------------
# Value checks: the dataclass field's type, and a range or choices where one is meaningful


@dataclass(frozen=True)
class Rule:
    """A check beyond the type: ``ok(value)`` must hold; ``text`` says what is expected."""

    ok: Callable[[Any], bool]
    text: str


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low:g}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"> {low:g}")


def between(low: float, high: float, *, high_open: bool = False) -> Rule:
    if high_open:
        return Rule(lambda v: low <= v < high, f"in [{low:g}, {high:g})")
    return Rule(lambda v: low <= v <= high, f"in [{low:g}, {high:g}]")


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(lambda v: v in choices, f"valid choices: {', '.join(choices)}")


NON_EMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")

# (section, key) -> the rule for the value (for a list field: for each element). Names of methods,
# datasets, backbones, corrupted sets and OOD sets are checked against their registries by the runner.
RULES: dict[tuple[str, str], Rule] = {
    ("run", "method"): NON_EMPTY, ("run", "dataset"): NON_EMPTY, ("run", "backbone"): NON_EMPTY, ("run", "suite"): NON_EMPTY,
    ("run", "seed"): at_least(0),
    ("train", "epochs"): at_least(0), ("train", "batch_size"): at_least(1), ("train", "lr"): above(0),
    ("train", "momentum"): between(0, 1, high_open=True), ("train", "weight_decay"): at_least(0), ("train", "warmup_epochs"): at_least(0),
    ("train", "schedule"): one_of(SCHEDULES), ("train", "milestones"): at_least(0), ("train", "gamma"): above(0),
    ("train", "final_lr_fraction"): between(0, 1), ("train", "precision"): one_of(TRAIN_PRECISIONS), ("train", "nan_check_every"): at_least(0),
    ("train", "crop_pad"): at_least(0), ("train", "norm_weight_decay"): at_least(0), ("train", "log"): one_of(TRAIN_LOGS),
    ("train", "bn_group"): at_least(0),
    ("eval", "batch_size"): at_least(1), ("eval", "precision"): one_of(PRECISIONS), ("eval", "corruptions"): NON_EMPTY,
    ("eval", "corruption_set"): NON_EMPTY, ("eval", "corruption_severities"): between(1, 5), ("eval", "corruption_subset"): at_least(0),
    ("eval", "corruption_seed"): at_least(0), ("eval", "latency_repeats"): at_least(1), ("eval", "latency_batch"): at_least(1),
    ("eval", "test_subset"): at_least(0), ("eval", "test_subset_seed"): at_least(0), ("eval", "predictions_dtype"): one_of(PREDICTIONS_DTYPES),
    ("data", "val_size"): at_least(0), ("data", "train_subset"): at_least(0), ("data", "subset_seed"): at_least(0),
    ("method", "members"): at_least(1),
}

_TYPE_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}


def _type_ok(value: Any, kind: type) -> bool:
    """Booleans, integers and numbers kept apart: an integer is a valid number, a boolean is neither."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def _expected(kind: type, rule: Rule | None) -> str:
    """``an integer >= 0``, ``a string; valid choices: fp32, bf16``, ``a non-empty string``."""
    text = _TYPE_NAMES.get(kind, kind.__name__)
    if rule is NON_EMPTY:
        return rule.text
    if rule is None:
        return text
    return f"{text}; {rule.text}" if rule.text.startswith("valid choices") else f"{text} {rule.text}"


def check_value(section: str, key: str, value: Any, annotation: Any) -> None:
    """Raise ConfigError if ``value`` is not of the field's type (``int``, ``float``, ``bool``,
    ``str``, ``list[...]``, ``... | None``) or breaks its rule in :data:`RULES` (for a list: each element's)."""
    rule = RULES.get((section, key))
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        optional = type(None) in typing.get_args(annotation)
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if optional and value is None:
        return
    where = f"{section}.{key} = {value!r} is not valid"
    suffix = " (or absent for the default)" if optional else ""
    if typing.get_origin(annotation) is list and typing.get_args(annotation)[0] in _TYPE_NAMES:
        kind = typing.get_args(annotation)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, each element {_expected(kind, rule)}{suffix}")
        for item in value:
            if not _type_ok(item, kind) or (rule is not None and not rule.ok(item)):
                raise ConfigError(f"{where}: element {item!r} is not {_expected(kind, rule)}")
        return
    if annotation not in _TYPE_NAMES:
        return  # a type these checks do not know (a plug-in's own): left to the code that uses it
    if not _type_ok(value, annotation) or (rule is not None and not rule.ok(value)):
        raise ConfigError(f"{where}: expected {_expected(annotation, rule)}{suffix}")


def choice_field(default: str, choices: tuple[str, ...]) -> Any:
    """A string option of an ``Options`` dataclass that takes one of ``choices``
    (:func:`check_options` refuses any other value and lists them)."""
    if default not in choices:
        raise ValueError(f"default {default!r} is not among the choices {choices}")
    return field(default=default, metadata={"choices": tuple(choices)})


def check_choice(section: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    """ConfigError unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise ConfigError(f"{section}.{key} = {value!r} is not valid; valid choices: {', '.join(choices)}")


def check_options(section: str, owner: str, values: dict[str, Any], options: type) -> None:
    """Check a method's (or backbone's) option table against its ``Options`` dataclass before
    anything runs: unknown keys, each value's type (and rule in :data:`RULES`, e.g.
    ``method.members >= 1``) and, for a field made by :func:`choice_field`, its choices; fields
    whose types cannot be resolved are left to the method."""
    if not dataclasses.is_dataclass(options):
        return
    fields = {f.name: f for f in dataclasses.fields(options)}
    bad = sorted(set(values) - set(fields))
    if bad:
        raise ConfigError(f"unknown option(s) {bad} for {section} {owner!r}; valid options: {', '.join(sorted(fields))}")
    for key, value in values.items():
        choices = fields[key].metadata.get("choices")
        if choices is not None:
            check_choice(section, key, value, choices)
    try:
        hints = typing.get_type_hints(options)
    except Exception:  # noqa: BLE001  (an annotation this module cannot resolve: no type checks)
        return
    for key, value in values.items():
        if key in hints:
            check_value(section, key, value, hints[key])


def check_section(name: str, values: dict[str, Any]) -> None:
    """Check every value of section ``name`` against its dataclass field type and rule."""
    hints = typing.get_type_hints(SECTIONS[name])
    for key, value in values.items():
        if key in hints:
            check_value(name, key, value, hints[key])


def _check_table(name: str, table: Any, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table, found {table!r}")
    if name in SECTIONS:
        valid = {f.name for f in dataclasses.fields(SECTIONS[name])}
        bad = sorted(set(table) - valid)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad} in [{name}]; valid keys: {', '.join(sorted(valid))}")


def validate_run_config(config: dict[str, Any], where: str = "config") -> None:
    """Unknown tables or keys raise ConfigError naming them and listing the valid ones."""
    valid_tables = sorted([*SECTIONS, *FREE_SECTIONS])
    bad = sorted(set(config) - set(valid_tables))
    if bad:
        raise ConfigError(f"{where}: unknown table(s) {bad}; valid tables: {', '.join(valid_tables)}")
    for name, table in config.items():
        _check_table(name, table, where)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts (``over`` wins); inputs are not modified."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=5"`` -> ``{"train": {"epochs": 5}}``; values use TOML syntax, bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like table.key=value (e.g. train.epochs=5)")
    key, raw = (s.strip() for s in text.split("=", 1))
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be table.key (e.g. train.epochs, method.members)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as cosine or resnet20
    return {parts[0]: {parts[1]: value}}


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        config = merge(config, parse_override(text))
    return config


def load_toml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Fill every known section with its defaults, so a record stores the complete config, and check
    every value's type and range (ConfigError naming the key, the value and what is expected)."""
    validate_run_config(config)
    out = {}
    for name, cls in SECTIONS.items():
        try:
            out[name] = dataclasses.asdict(cls(**config.get(name, {})))
        except TypeError as exc:
            raise ConfigError(f"[{name}]: {exc}") from None
        check_section(name, out[name])
    for name in FREE_SECTIONS:
        out[name] = dict(config.get(name, {}))
    return out


def train_config(config: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**config["train"])


# ---------------------------------------------------------------------------------------------
# Suites


SUITE_KEYS = ("name", "description", "seeds", "defaults", "runs", "budget_note")


def suite_path(name_or_path: str) -> Path:
    """A suite by name (``benchmark/suites/<name>.toml``) or by file path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    candidate = SUITES_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    names = sorted(q.stem for q in SUITES_DIR.glob("*.toml"))
    raise ConfigError(f"unknown suite {name_or_path!r}; valid choices: {', '.join(names)} (or a path to a .toml file)")


def load_suite(name_or_path: str, seeds: list[int] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(suite metadata, expanded run configs: one per [[runs]] entry x seed); ``seeds`` replaces the
    suite's (and its entries') seed lists: the same runs at other seeds, in the same namespace."""
    path = suite_path(name_or_path)
    suite = load_toml(path)
    bad = sorted(set(suite) - set(SUITE_KEYS))
    if bad:
        raise ConfigError(f"{path}: unknown key(s) {bad}; valid keys: {', '.join(SUITE_KEYS)}")
    name = suite.get("name", path.stem)
    defaults = suite.get("defaults", {})
    validate_run_config(defaults, f"{path} [defaults]")
    suite_seeds = suite.get("seeds", [0])
    runs = []
    for i, entry in enumerate(suite.get("runs", [])):
        entry = dict(entry)
        label = entry.pop("name", "")
        entry_seeds = entry.pop("seeds", suite_seeds)
        entry_seeds = seeds if seeds is not None else entry_seeds
        validate_run_config(entry, f"{path} runs[{i}]")
        for seed in entry_seeds:
            cfg = merge(defaults, entry)
            cfg = merge(cfg, {"run": {"seed": seed, "suite": name, "name": label or cfg.get("run", {}).get("method", "")}})
            runs.append(cfg)
    return {"name": name, "description": suite.get("description", ""), "budget_note": suite.get("budget_note", ""), "path": str(path)}, runs


def suite_entry(spec: str) -> dict[str, Any]:
    """``SUITE:NAME`` -> the run config of entry ``NAME`` of suite ``SUITE`` (the suite's defaults
    merged with the entry) at its first seed, as a partial config for ``run``. The run's suite is
    left at its default (``adhoc``), so such a run never lands among the suite's own records.
    An unknown suite or entry raises ConfigError listing the valid ones."""
    suite, sep, name = spec.partition(":")
    if not sep or not suite or not name:
        raise ConfigError(f"--from-suite {spec!r} must look like SUITE:NAME (e.g. quick:mimo)")
    meta, runs = load_suite(suite)
    names = list(dict.fromkeys(r["run"]["name"] for r in runs))
    for run in runs:
        if run["run"]["name"] == name:
            out = copy.deepcopy(run)
            out["run"].pop("suite", None)
            return out
    raise ConfigError(f"unknown run {name!r} in suite {meta['name']!r}; valid choices: {', '.join(names)}")


# ---------------------------------------------------------------------------------------------
# Describing options (``list -v``, ``describe``)


@dataclass(frozen=True)
class OptionDoc:
    """One option of an Options dataclass or config section: name, type, default, one-line help."""

    name: str
    type: str
    default: Any
    help: str


def _docstring_help(cls: type) -> dict[str, str]:
    """``name`` -> help from docstrings written as ````name````: help; ````other````: help. (the
    class's and its bases'; the class's own win); ````a````/````b````: help names both."""
    import re

    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = " ".join((klass.__dict__.get("__doc__") or "").split())
        marks = list(re.finditer(r"((?:``\w+``\s*/\s*)*``\w+``)\s*:\s*", text))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = text[m.end():end].strip().rstrip(";").strip()
            body = body[:-1] if body.endswith(".") and i + 1 == len(marks) else body
            for name in re.findall(r"``(\w+)``", m.group(1)):
                found[name] = body.rstrip(";. ")
    return found


def _comment_help(cls: type) -> dict[str, str]:
    """``name`` -> the comment after ``name: type = default  # help`` in the class's source (and its bases')."""
    import inspect
    import re

    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
            if m:
                found[m.group(1)] = m.group(2).strip()
    return found


def describe_options(cls: type) -> list[OptionDoc]:
    """The fields of dataclass ``cls`` with type, default and one-line help (the field's trailing
    comment, else its entry in the class docstring, else empty)."""
    if not dataclasses.is_dataclass(cls):
        return []
    comments, docs = _comment_help(cls), _docstring_help(cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001  (an annotation this module cannot resolve: its text is shown)
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        kind = hints.get(f.name, f.type)
        text = kind if isinstance(kind, str) else getattr(kind, "__name__", None) if isinstance(kind, type) else str(kind)
        help_text = comments.get(f.name) or docs.get(f.name, "")
        rule = RULES.get((_section_of(cls), f.name))
        if rule is not None and rule is not NON_EMPTY and rule.text not in help_text:
            help_text = f"{help_text} ({rule.text})" if help_text else rule.text
        out.append(OptionDoc(f.name, str(text).replace("typing.", ""), default, help_text))
    return out


def _section_of(cls: type) -> str:
    for name, section in SECTIONS.items():
        if section is cls:
            return name
    return "method"
