"""The documentation site's generated pages, from the registries' own metadata (so they cannot drift).

- one page per registered method (:func:`method_page`): its class and module docstrings, its
  ``Options`` dataclass (type, default, help: what ``python -m benchmark describe NAME`` prints),
  what it costs at its defaults (members, forward passes, training rows per image, parameters and
  FLOPs counted on the quick suite's network) and its rows in the published reference records,
  around the page's hand-written notes (``docs/methods/notes/<name>.md``: how plures implements
  the method, its departures from the reference recipe);
- the method catalogue (:func:`methods_index`);
- the metric and column definitions (:func:`metric_table`, :func:`column_table`) from
  :mod:`benchmark.evaluation.metric_specs` and :mod:`benchmark.leaderboard.columns`;
- the index of the committed measurements (:func:`measurements_index`): ``results/perf/`` and
  ``results/corruptions/``, each file's title and setup as it states them.

Every function returns Markdown; the site's build hook (``docs/hooks/plures_docs.py``) turns the
results into pages at build time, so nothing generated is committed or edited by hand.
``python -m benchmark.tools.docs_pages OUT`` writes them into a folder, to read without MkDocs.

Not part of the product: nothing in the harness imports it.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[2]
REFERENCE_RUNS = REPO / "results" / "reference" / "runs"
REFERENCE_BOARDS = REPO / "results" / "reference" / "leaderboards"
# Hand-written notes of a method page (how plures implements it, its departures from the reference
# recipe): docs/methods/notes/<name>.md, included in the generated page; not pages of their own.
METHOD_NOTES = REPO / "docs" / "methods" / "notes"

# The network the cost table counts on: the quick suite's (ResNet-8 of width 16, CIFAR-sized images).
COST_TASK = {"backbone": "resnet8", "backbone_options": {"width": 16}, "num_classes": 10, "image_size": 32}

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`~?\.*([^`]+)`")


def roles_to_code(text: str) -> str:
    """Sphinx cross-reference roles (``:class:`~a.B```, ``:func:`..x.f```) as Markdown code spans (``a.B``, ``x.f``)."""
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", text)


def markdown_of_docstring(text: str | None) -> str:
    """A docstring as Markdown: Sphinx roles become code spans, the indentation of the lines after
    the first is removed."""
    return roles_to_code(inspect.cleandoc(text)) if text else ""


def first_paragraph(text: str | None) -> str:
    """The first paragraph of a docstring on one line."""
    return " ".join(markdown_of_docstring(text).split("\n\n")[0].split())


def _cell(value: Any) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return " ".join(str(value).replace("|", "\\|").split())


def table(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def si(n: float) -> str:
    """A count in k / M / G (three significant digits)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def method_names() -> list[str]:
    """Every registered method (built-ins and loaded plug-ins), sorted."""
    from benchmark.catalogue.methods import method_names as names

    return names()


def source_path(obj: Any) -> str:
    """The repository-relative file of a class or module (its absolute path outside the repository)."""
    path = Path(inspect.getfile(obj)).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def options_table(name: str) -> str:
    """A method's options (``--set method.KEY=VALUE``): name, type, default and help."""
    from benchmark.catalogue.methods import get_method
    from benchmark.core import config as C

    docs = C.describe_options(get_method(name).Options)
    if not docs:
        return "No options."
    return table(["option", "type", "default", "meaning"], ([f"`{d.name}`", f"`{d.type}`", f"`{d.default!r}`", roles_to_code(d.help)] for d in docs))


@functools.lru_cache(maxsize=None)
def default_costs(name: str) -> dict[str, Any]:
    """What the method costs at its default options on :data:`COST_TASK`: members, training rows per
    image, and per eval variant its label, forward passes, members combined, parameters and FLOPs
    per example (counted by the harness's own counter on one test-sized example)."""
    import torch

    from benchmark.catalogue.methods import get_method
    from benchmark.evaluation.cost import count_parameters, flops_per_example
    from benchmark.methods.base import Task

    task = Task(**COST_TASK)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        method = get_method(name).from_config({}, task)
        model = method.build().eval()
        example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
        variants = []
        with torch.no_grad():
            for v in method.eval_variants(model):
                variants.append({"label": v.label, "forward_passes": v.forward_passes, "members": v.members,
                                 "params": count_parameters(v.network), "flops": flops_per_example(v.network, example)})
    return {"members": method.members, "rows_per_example": method.rows_per_example(), "variants": variants}


def cost_section(name: str, baseline_flops: float | None) -> str:
    """The cost table of a method page (FLOPs relative to the deterministic model when given)."""
    costs = default_costs(name)
    net = COST_TASK["backbone_options"]
    intro = (f"At its default options, counted on the quick suite's network ({COST_TASK['backbone']}, width {net['width']}, "
             f"{COST_TASK['image_size']}x{COST_TASK['image_size']} images, {COST_TASK['num_classes']} classes). It trains "
             f"{costs['members']} member{'s' if costs['members'] != 1 else ''} and processes {costs['rows_per_example']:g} "
             f"row{'s' if costs['rows_per_example'] != 1 else ''} per unique training image (`rows_per_example`). Each evaluated "
             "variant is a leaderboard row of its own:")
    rows = []
    for v in costs["variants"]:
        ratio = f"{v['flops'] / baseline_flops:.2f}x" if baseline_flops else "-"
        rows.append([f"`{v['label']}`" if v["label"] else "(plain)", v["members"], v["forward_passes"], si(v["params"]), si(v["flops"]), ratio])
    return intro + "\n\n" + table(["variant", "members combined", "forward passes", "parameters", "FLOPs per example", "x deterministic FLOPs"], rows)


def reference_records(runs: Path = REFERENCE_RUNS) -> list[dict[str, Any]]:
    """The completed published records (``results/reference/runs/<suite>/*.json``), read as JSON."""
    out = []
    for path in sorted(runs.glob("*/*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") == "completed":
            out.append(rec)
    return out


def reference_section(name: str, records: list[dict[str, Any]], link_prefix: str = "../") -> str:
    """The method's rows in the published records: one line per (suite, dataset, backbone, variant)
    with the seeds and the counted cost, linked to the suite's published leaderboard."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        ident = rec["identity"]
        if ident["method"] == name:
            groups[(ident["suite"], ident["dataset"], ident["backbone"], ident.get("variant", ""))].append(rec)
    if not groups:
        return "No published record uses this method yet."
    rows = []
    for (suite, dataset, backbone, variant), recs in sorted(groups.items()):
        cost = recs[0]["cost"]
        board = REFERENCE_BOARDS / suite / "index.html"
        shown = f"[{suite}]({link_prefix}results/reference/leaderboards/{suite}/index.html)" if board.is_file() else suite
        seeds = ", ".join(str(s) for s in sorted({r["identity"]["seed"] for r in recs}))
        rows.append([shown, f"{dataset} / {backbone}", f"`{variant}`" if variant else "(plain)", seeds, si(cost["params"]),
                     si(cost["flops_per_example"]), cost["forward_passes"]])
    return table(["suite", "dataset / backbone", "variant", "seeds", "params", "FLOPs/ex", "passes"], rows)


def method_notes(name: str, folder: Path = METHOD_NOTES) -> str:
    """The hand-written notes of a method's page (``docs/methods/notes/<name>.md``), or "" when it has none."""
    path = folder / f"{name}.md"
    return path.read_text().strip() if path.is_file() else ""


def method_page(name: str, records: list[dict[str, Any]] | None = None, baseline_flops: float | None = None) -> str:
    """The page of one registered method: the generated sections around its hand-written notes."""
    from benchmark.catalogue.methods import get_method

    cls = get_method(name)
    module = sys.modules[cls.__module__]
    records = reference_records() if records is None else records
    parts = [
        f"# {name}",
        f"**{first_paragraph(cls.__doc__)}**" if cls.__doc__ else "",
        f"Registered as `{name}` by `{cls.__module__}.{cls.__qualname__}` (`{source_path(cls)}`). Run it with "
        f"`--set run.method={name}`; `python -m benchmark describe {name}` prints the options below.",
        method_notes(name),
        "## The method in detail" if method_notes(name) else "## The method",
        markdown_of_docstring(module.__doc__),
        "## Options",
        f"Set with `--set method.KEY=VALUE` or a run config's `[method]` table; unknown keys and wrong types fail before any data is read.\n\n"
        + options_table(name),
        "## Cost",
        cost_section(name, baseline_flops),
        "## In the published records",
        reference_section(name, records),
        "*This page is generated from the method's code and the published records when the site is built.*",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def methods_index(names: list[str] | None = None) -> str:
    """The catalogue: every method with its one-line idea, defaults and cost at its defaults."""
    from benchmark.catalogue.methods import get_method

    names = method_names() if names is None else names
    rows = []
    for name in names:
        cls = get_method(name)
        shown = [f"`{v['label']}`: {v['forward_passes']}" if v["label"] else str(v["forward_passes"]) for v in default_costs(name)["variants"]]
        rows.append([f"[`{name}`]({name}.md)", first_paragraph(cls.__doc__), f"`{source_path(cls)}`", ", ".join(shown)])
    return ("# Methods\n\nEvery method implements one contract (`benchmark.methods.base.Method`, see the "
            "[API reference](../api/methods.md)): a batch of images becomes member logits `[M, B, K]`; the loss (cross-entropy "
            "summed over members) and the combination (the mean of the member *probabilities*) are shared. A method differs only "
            "in the network it builds, how it forms each member's inputs and targets, and the stages it runs.\n\n"
            + table(["method", "idea", "module", "forward passes per test example (default rows)"], rows)
            + "\n\nEach page is generated from the method's code (docstrings, options, a cost count at the defaults) and the "
            "published records, around notes on how plures implements the method and where it departs from the reference recipe. "
            "What every method shares, the departures that concern several methods and the equal-cost single models: "
            "[Recipes and departures](recipes.md). `python -m benchmark list -v` prints the same options in a terminal.\n")


def metric_table() -> str:
    """Every registered metric: its record key, leaderboard column, direction, corrupted summary and what computes it."""
    from benchmark.evaluation.metric_specs import metric_specs

    rows = []
    for m in metric_specs():
        better = {"max": "higher", "min": "lower"}.get(m.better or "", "-")
        column = m.label if m.shown else f"{m.label} (record and CSV only)"
        summary = f"`{m.summary}` ({m.summary_label})" if m.summary and m.summary_label else (f"`{m.summary}` (CSV only)" if m.summary else "-")
        by = f"group `{m.group}`" if m.group else ("`compute` function" if m.compute else "streaming sums")
        rows.append([f"`{m.key}`", column, better, summary, by, m.description])
    return table(["record key", "leaderboard column", "better", "corrupted summary", "computed by", "definition"], rows)


def column_table() -> str:
    """The leaderboard's columns that are not metrics of one prediction: mCE, cost, DEE, OOD."""
    from benchmark.leaderboard.columns import COST_COLUMNS, DEE_COLUMN, MCE_COLUMNS, MI_OOD_PREFIX, OOD_PREFIX

    def row(key: str, label: str, better: str | None) -> list[str]:
        return [f"`{key}`", label, {"max": "higher", "min": "lower"}.get(better or "", "not ranked")]

    rows = [row(c.key, c.label, c.better) for c in (*MCE_COLUMNS, DEE_COLUMN, *COST_COLUMNS)]
    rows += [row(f"{OOD_PREFIX}<set>", "AUROC <set> (%)", "max"), row(f"{MI_OOD_PREFIX}<set>", "MI-AUROC <set> (%)", "max")]
    return table(["frame key", "leaderboard column", "better"], rows)


MEASUREMENTS = ("results/perf/*.md", "results/corruptions/*.md")


def measurements_index(patterns: Iterable[str] = MEASUREMENTS, link_prefix: str = "") -> str:
    """The committed measurement files: each linked by its path, with its title and the first
    paragraph under it (what was measured and how), as the file itself says."""
    items = []
    for pattern in patterns:
        for path in sorted(REPO.glob(pattern)):
            paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
            title = paragraphs[0].lstrip("# ").strip() if paragraphs and paragraphs[0].startswith("# ") else path.stem
            setup = " ".join(paragraphs[1].split()) if len(paragraphs) > 1 and not paragraphs[1].startswith(("|", "```")) else ""
            if setup.endswith((" by", ":")):  # a lead-in to a command block, not a description
                setup = ""
            rel = path.relative_to(REPO).as_posix()
            items.append(f"- [`{rel}`]({link_prefix}{rel}): **{title}**. {setup}".rstrip())
    return "\n".join(items) if items else "No measurement is committed yet."


def baseline_flops() -> float | None:
    """The deterministic model's FLOPs per example on :data:`COST_TASK` (None when it is not registered)."""
    if "deterministic" not in method_names():
        return None
    return float(default_costs("deterministic")["variants"][0]["flops"])


def generated_pages() -> dict[str, str]:
    """Every generated page: site path (relative to the docs folder) -> Markdown."""
    from benchmark.catalogue.methods import load_methods

    load_methods()
    records = reference_records()
    base = baseline_flops()
    pages = {"methods/index.md": methods_index()}
    for name in method_names():
        pages[f"methods/{name}.md"] = method_page(name, records, base)
    return pages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.docs_pages", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write the generated pages into")
    args = p.parse_args(argv)
    for rel, text in generated_pages().items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
