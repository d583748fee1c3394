"""The paper recipes' table (``benchmark/suites/reference/recipes.toml``): checked against the
suites, rendered as a page.

    python -m benchmark.tools.recipes            # writes results/recipes/recipes.md
    python -m benchmark.tools.recipes --check    # compares the suites with the table; exit 1 on a difference

The table states, for each (method, dataset) recipe of the ``paper`` and ``imagenet`` suites, every
value of the resolved run config with the reference code's value and source, and every departure
with its reason and expected effect. :func:`check` resolves every entry of those suites and
returns each difference: a value that differs from the table, a key of the resolved config that
the table does not state (nor lists under ``[ignored]``), an entry no recipe covers, a recipe entry
the suite lacks. ``tests/test_reference_recipes.py`` requires it to return nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..backbones import BACKBONES
from ..catalogue.methods import get_method
from ..core import config as C

TABLE = C.SUITES_DIR / "reference" / "recipes.toml"
PAGE = Path("results/recipes/recipes.md")
UNSET = "unset"  # the table's spelling of a None value (TOML has no null)
IMPLIED = ("run.method", "run.dataset")  # stated by a recipe's ``method`` and ``datasets``


@dataclass(frozen=True)
class Item:
    """One line of a recipe: a value (ours equals the reference's, after any stated conversion) or
    a departure (with ``reason`` and ``effect``). ``key`` is a resolved-config key (compared), or
    "" for an ``aspect`` that no config key holds."""

    key: str
    aspect: str
    value: Any
    ub: str
    source: str
    departure: bool
    reason: str = ""
    effect: str = ""

    @property
    def label(self) -> str:
        return f"`{self.key}`" if self.key else self.aspect


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    suite: str
    method: str
    datasets: tuple[str, ...]
    entries: tuple[str, ...]
    shared: tuple[str, ...]
    own: tuple[Item, ...]  # the recipe's own values and departures
    items: tuple[Item, ...]  # the shared groups' items, overridden by the recipe's own (by key or aspect)


@dataclass(frozen=True)
class Table:
    reference: dict[str, str]
    ignored: dict[str, str]
    shared: dict[str, tuple[Item, ...]]
    recipes: tuple[Recipe, ...]
    evaluation: tuple[Item, ...]


def _items(group: dict[str, Any]) -> list[Item]:
    out = []
    for departure, rows in ((False, group.get("values", [])), (True, group.get("departures", []))):
        for row in rows:
            out.append(Item(row.get("key", ""), row.get("aspect", ""), row["value"], row["ub"], row["source"], departure,
                            row.get("reason", ""), row.get("effect", "")))
    return out


def _ident(item: Item) -> str:
    return item.key or item.aspect


def load_table(path: Path | str = TABLE) -> Table:
    """The table, each recipe's shared groups merged under its own items."""
    raw = tomllib.loads(Path(path).read_text())
    shared = {g["name"]: tuple(_items(g)) for g in raw.get("shared", [])}
    recipes = []
    for r in raw["recipes"]:
        merged: dict[str, Item] = {}
        for name in r.get("shared", []):
            if name not in shared:
                raise C.ConfigError(f"{path}: recipe {r['name']!r} takes unknown shared group {name!r}; valid choices: {', '.join(shared)}")
            merged.update((_ident(i), i) for i in shared[name])
        own = _items(r)
        merged.update((_ident(i), i) for i in own)
        recipes.append(Recipe(r["name"], r["title"], r["suite"], r["method"], tuple(r["datasets"]), tuple(r["entries"]),
                              tuple(r.get("shared", [])), tuple(own), tuple(merged.values())))
    evaluation = tuple(Item("", e["aspect"], e["value"], e["ub"], e["source"], True, e["reason"], e["effect"]) for e in raw.get("evaluation", []))
    return Table(raw.get("reference", {}), raw.get("ignored", {}), shared, tuple(recipes), evaluation)


# ---------------------------------------------------------------------------------------------
# Comparing the suites with the table


def resolved_values(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config as flat ``section.key`` values, the method's and the backbone's
    options completed with their defaults (the network a run builds)."""
    out: dict[str, Any] = {}
    for section in ("run", "train", "data"):
        out.update((f"{section}.{k}", v) for k, v in resolved[section].items())
    options = get_method(resolved["run"]["method"]).Options(**resolved["method"])
    out.update((f"method.{k}", v) for k, v in dataclasses.asdict(options).items())
    backbone = {**BACKBONES.get(resolved["run"]["backbone"]).options, **resolved["backbone"]}
    out.update((f"backbone.{k}", v) for k, v in backbone.items())
    return out


def same(ours: Any, table: Any) -> bool:
    """Whether a resolved value equals the table's: numbers to 12 digits, booleans only as booleans,
    ``"unset"`` as None, lists element by element."""
    if isinstance(table, str) and table == UNSET:
        return ours is None
    if isinstance(ours, bool) or isinstance(table, bool):
        return isinstance(ours, bool) and isinstance(table, bool) and ours == table
    if isinstance(ours, (int, float)) and isinstance(table, (int, float)):
        return math.isclose(ours, table, rel_tol=1e-12)
    if isinstance(ours, list) and isinstance(table, list):
        return len(ours) == len(table) and all(same(a, b) for a, b in zip(ours, table))
    return type(ours) is type(table) and ours == table


def check_entry(recipe: Recipe, resolved: dict[str, Any], ignored: dict[str, str]) -> list[str]:
    """The differences between one resolved entry and its recipe."""
    values = resolved_values(resolved)
    where = f"{resolved['run']['suite']}:{resolved['run']['name']} (seed {resolved['run']['seed']})"
    problems = []
    if values["run.method"] != recipe.method:
        problems.append(f"{where}: run.method = {values['run.method']!r}, the table's recipe {recipe.name!r} says {recipe.method!r}")
    if values["run.dataset"] not in recipe.datasets:
        problems.append(f"{where}: run.dataset = {values['run.dataset']!r}, the table's recipe {recipe.name!r} says one of {list(recipe.datasets)}")
    stated = set()
    for item in recipe.items:
        if not item.key:
            continue
        stated.add(item.key)
        if item.key not in values:
            problems.append(f"{where}: the table's recipe {recipe.name!r} states {item.key}, which the resolved config does not have")
        elif not same(values[item.key], item.value):
            problems.append(f"{where}: {item.key} = {values[item.key]!r}, the table's recipe {recipe.name!r} says {item.value!r} ({item.source})")
    for key in sorted(set(values) - stated - set(ignored) - set(IMPLIED)):
        problems.append(f"{where}: {key} = {values[key]!r} is stated nowhere in the table (recipe {recipe.name!r}): "
                        f"add it to the recipe's values or departures, or to [ignored] with a reason")
    return problems


def check(table: Table | None = None, paths: dict[str, Path] | None = None) -> list[str]:
    """Every difference between the suites the table covers and the table (empty: they agree).
    ``paths``: suite name -> the file to read instead of ``benchmark/suites/<name>.toml``."""
    table = table or load_table()
    paths = paths or {}
    problems = []
    for suite in dict.fromkeys(r.suite for r in table.recipes):
        meta, runs = C.load_suite(str(paths.get(suite, suite)))
        recipes = [r for r in table.recipes if r.suite == suite]
        by_entry: dict[str, list[Recipe]] = {}
        for r in recipes:
            for entry in r.entries:
                by_entry.setdefault(entry, []).append(r)
        names = list(dict.fromkeys(run["run"]["name"] for run in runs))
        for entry, covering in by_entry.items():
            if entry not in names:
                problems.append(f"{suite}: the table's recipe {covering[0].name!r} names entry {entry!r}, which the suite lacks; entries: {', '.join(names)}")
            if len(covering) > 1:
                problems.append(f"{suite}: entry {entry!r} is in several recipes: {', '.join(r.name for r in covering)}")
        for run in runs:
            name = run["run"]["name"]
            if name not in by_entry:
                problems.append(f"{suite}: entry {name!r} is in no recipe of the table")
                continue
            problems += check_entry(by_entry[name][0], C.resolve(run), table.ignored)
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------
# The page

_SOURCE = re.compile(r"((?:baselines|uncertainty_baselines)/[\w/]+\.py):(\d+)(?:-(\d+))?")


def _link_sources(text: str, reference: dict[str, str]) -> str:
    """UB paths with a line (``baselines/cifar/utils.py:77``) as links to that line at the commit
    the table reads them at (ImageNet files: the published vintage)."""
    def link(m: re.Match) -> str:
        path, first, last = m.group(1), m.group(2), m.group(3)
        vintage = "imagenet" in path or "resnet50" in path
        commit = reference.get("ub_imagenet_vintage" if vintage else "ub_head", "main")
        anchor = f"#L{first}" + (f"-L{last}" if last else "")
        return f"[{m.group(0)}]({reference.get('ub', 'https://github.com/google/uncertainty-baselines')}/blob/{commit}/{path}{anchor})"

    return _SOURCE.sub(link, text)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _values_table(items: Sequence[Item], reference: dict[str, str]) -> list[str]:
    rows = ["| key | ours | reference | source |", "|---|---|---|---|"]
    rows += [f"| {i.label} | {_cell(_fmt(i.value))} | {_cell(i.ub)} | {_cell(_link_sources(i.source, reference))} |" for i in items]
    return rows


def _departures_table(rows: Sequence[tuple[str, Item]], reference: dict[str, str], first: str = "") -> list[str]:
    """Departures as a table; ``rows`` pair each item with where it applies (the ``first`` column, when named)."""
    head = ["what", "ours", "reference", "source", "why", "expected effect"]
    head = [first, *head] if first else head
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for who, i in rows:
        cells = [i.label, _fmt(i.value), i.ub, _link_sources(i.source, reference), i.reason, i.effect]
        out.append("| " + " | ".join(_cell(c) for c in ([who, *cells] if first else cells)) + " |")
    return out


def render(table: Table) -> str:
    """The page: every recipe's values with their sources, every departure with its reason."""
    ref = table.reference
    ub = ref.get("ub", "https://github.com/google/uncertainty-baselines")
    lines = [
        "# Paper recipes, value by value",
        "",
        "Generated by `python -m benchmark.tools.recipes` from `benchmark/suites/reference/recipes.toml`; do not edit.",
        "`tests/test_reference_recipes.py` resolves every entry of the `paper` and `imagenet` suites and compares it with",
        "that table, so a value in a suite cannot drift from this page.",
        "",
        f"Reference code: [google/uncertainty-baselines]({ub}) (UB). CIFAR lines are read at HEAD "
        f"[`{ref.get('ub_head', '')[:8]}`]({ub}/tree/{ref.get('ub_head', '')}); ImageNet lines in the vintage that trained "
        f"the published ImageNet rows, [`{ref.get('ub_imagenet_vintage', '')[:8]}`]({ub}/tree/{ref.get('ub_imagenet_vintage', '')}) "
        "(the parent of the 2021-03-10 change of the learning-rate schedule). L2 coefficients `l2` appear as "
        "`weight_decay = 2 * l2`; where a reference loss averages over M x B rows and ours sums over members, the "
        "learning rate is divided and the weight decay multiplied by M (the same SGD update).",
        "",
        "## Contents",
        "",
    ]
    lines += [f"- [{s}](#shared-{s}) (shared values)" for s in table.shared]
    lines += [f"- [{r.title}](#{r.name}) (`{r.suite}`: {', '.join(f'`{e}`' for e in r.entries)})" for r in table.recipes]
    lines += ["- [Evaluation](#evaluation)", "- [Every departure](#every-departure)", ""]
    for name, items in table.shared.items():
        values = [i for i in items if not i.departure]
        departures = [i for i in items if i.departure]
        lines += [f'<a id="shared-{name}"></a>', f"## Shared: {name}", "", f"Taken by every recipe that names `{name}` (its own lines win).", ""]
        lines += _values_table(values, ref) + [""]
        if departures:
            lines += ["Departures:", ""] + _departures_table([("", i) for i in departures], ref) + [""]
    for r in table.recipes:
        values = [i for i in r.own if not i.departure]
        departures = [i for i in r.own if i.departure]
        lines += [f'<a id="{r.name}"></a>', f"## {r.title}", "",
                  f"Suite `{r.suite}`, entries {', '.join(f'`{e}`' for e in r.entries)}; method `{r.method}`; "
                  f"datasets {', '.join(f'`{d}`' for d in r.datasets)}; with the shared values of {', '.join(f'`{s}`' for s in r.shared) or 'none'}.", ""]
        if values:
            lines += _values_table(values, ref) + [""]
        if departures:
            lines += ["Departures:", ""] + _departures_table([("", i) for i in departures], ref) + [""]
    lines += ['<a id="evaluation"></a>', "## Evaluation", "", "How the published numbers were measured, where ours differ.", ""]
    lines += _departures_table([("", i) for i in table.evaluation], ref) + [""]
    every: list[tuple[str, Item]] = []
    for name, items in table.shared.items():
        every += [(f"shared `{name}`", i) for i in items if i.departure]
    for r in table.recipes:
        every += [(f"[{r.name}](#{r.name})", i) for i in r.own if i.departure]
    every += [("evaluation", i) for i in table.evaluation]
    lines += ['<a id="every-departure"></a>', "## Every departure", "",
              "Each departure that remains, where it applies, its reason and the expected direction of its effect.", ""]
    lines += _departures_table(every, ref, first="recipe") + [""]
    lines += ["Ignored keys (they do not shape a recipe):", ""]
    lines += [f"- `{k}`: {v}" for k, v in table.ignored.items()] + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.tools.recipes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=TABLE, help="the recipe table (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="compare the suites with the table and write nothing; exit 1 on a difference")
    args = ap.parse_args(argv)
    table = load_table(args.table)
    if args.check:
        problems = check(table)
        for p in problems:
            print(p)
        print(f"{len(problems)} difference(s) between the suites and {args.table}" if problems else f"the suites agree with {args.table}")
        return 1 if problems else 0
    from ..core.io import atomic_write_text

    atomic_write_text(args.out, render(table))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
