"""The documentation's contributor guides hold (docs/how-to/): the method template passes the contract
checks, plans its member run and runs end to end; the export and Python API examples run; the how-tos
and the published numbers' sources name what exists in the repository; the worked reading of the
published quick leaderboard quotes it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from benchmark.catalogue import plugins as P
from benchmark.catalogue.checks import ADVICE_CHECKS, CHECKS, contract_task, fixed_batch, run_checks
from benchmark.catalogue.methods import get_method, load_methods
from benchmark.core import config as C
from benchmark.core.runtime import Environment
from tests.doc_text import doc_block, doc_page, doc_section
from tests.test_plugins import only_builtins_after, write_module  # noqa: F401 - the autouse fixture unloads plug-ins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """The documentation's method template, written outside the repository and loaded as a plug-in: its class."""
    filename, code = doc_block("method-template")
    module = filename.removesuffix(".py")
    monkeypatch.syspath_prepend(str(write_module(tmp_path / "research", module, code)))
    monkeypatch.setenv(P.ENV_VAR, module)
    load_methods()
    [plugin] = [p for p in P.loaded_plugins() if p.module == module]
    assert plugin.methods == ("bootstrap_heads",)
    return get_method("bootstrap_heads")


@pytest.mark.parametrize("options", [{}, {"members": 2}, {"mirror": False, "members": 3}])
def test_template_passes_the_contract_checks(template, options) -> None:
    results = run_checks("bootstrap_heads", options=options, checks=[*CHECKS, *ADVICE_CHECKS])  # check-method's 7 lines
    assert [r.name for r in results] == [*CHECKS, *ADVICE_CHECKS]
    for name, passed, message in results:
        assert passed, (name, message)


def test_template_overrides_every_hook_as_documented(template) -> None:
    from benchmark.methods import Method

    hooks = ["build", "training_batch", "rows_per_example", "param_groups", "run", "forward_passes", "test_members", "variant",
             "eval_variants", "extra_record"]
    assert [h for h in hooks if getattr(template, h) is getattr(Method, h)] == []
    task = contract_task()
    m = template.from_config({"members": 3}, task)
    assert (m.members, m.test_members(), m.forward_passes(), m.rows_per_example(), m.variant()) == (3, 6, 2, 3.0, "M=3,mirror")
    model = m.build()
    variants = m.eval_variants(model)
    assert [(v.label, v.forward_passes, v.members) for v in variants] == [("M=3,mirror", 2, 6), ("M=3", 1, 3)]
    x, _ = fixed_batch(task)
    model.eval()
    assert variants[0].network(x).shape == (6, len(x), task.num_classes)
    groups = m.param_groups(model, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0] and all(p.ndim == 1 for p in groups[1]["params"])
    plain = template.from_config({"members": 2, "mirror": False}, task)
    assert (plain.test_members(), plain.forward_passes(), plain.variant()) == (2, 1, "M=2")
    # Every hook of the contract named in the tutorial's table.
    tutorial = doc_page("how-to/method-contract.md")
    for hook in ["Options", *hooks]:
        assert f"| `{hook}" in tutorial, hook


def test_template_plans_its_member_run_before_training(template) -> None:
    """A sweep finds the deterministic run the template reuses (planning stops at the first fit)."""
    from benchmark.sweep.plan import member_requests

    resolved = C.resolve({"run": {"method": "bootstrap_heads", "dataset": "cifar10", "backbone": "resnet8"}, "method": {"members": 2}})
    assert member_requests(resolved) == [{"run": {"method": "deterministic"}, "method": {}}]
    scratch = C.resolve({"run": {"method": "bootstrap_heads", "dataset": "cifar10", "backbone": "resnet8"},
                         "method": {"pretrained_trunk": False}})
    assert member_requests(scratch) == []


def test_template_runs_end_to_end(template, cifar10_dir, tiny_run_config: dict, tmp_path: Path) -> None:
    """One run: the deterministic member trained as its own run, the heads stage, two records (two
    eval variants) with the declared cost hooks and the method's extra facts."""
    from benchmark.runner import run_experiment

    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"run": {"method": "bootstrap_heads"}, "method": {"members": 2}})
    env = Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                      checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)
    paths = run_experiment(cfg, env)
    records = [json.loads(Path(p).read_text()) for p in paths]
    assert [r["status"] for r in records] == ["completed", "completed"]
    mirror, plain = records
    assert (mirror["identity"]["variant"], mirror["identity"]["members"], mirror["cost"]["forward_passes"]) == ("M=2,mirror", 4, 2)
    assert (plain["identity"]["variant"], plain["identity"]["members"], plain["cost"]["forward_passes"]) == ("M=2", 2, 1)
    assert plain["run_id"] == mirror["run_id"] + "-M=2"
    assert mirror["cost"]["rows_per_example"] == 2.0
    assert mirror["method_extra"] == {"bootstrap": True, "mirror": True, "pretrained_trunk": True}
    [member] = mirror["training"]["members"]
    assert member["method"] == "deterministic" and member["reused"] is False
    assert "heads" in mirror["training"]["history"] and len(mirror["training"]["history"]["heads"]) == 1  # half of 2 epochs
    assert (tmp_path / "ckpt" / member["run_id"] / "final.pt").is_file()


def test_export_example_writes_a_booktabs_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documentation's CSV-to-LaTeX example, run on the leaderboard of the fixture records."""
    from benchmark.leaderboard import write_leaderboards

    write_leaderboards(REPO / "tests" / "fixtures" / "records", tmp_path / "boards", ["fixture-c10"], plots=False)
    _, code = doc_block("export-example")
    line = 'folder, dataset = "results/leaderboards/paper", "cifar10"'
    assert line in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(line, f'folder, dataset = "{tmp_path / "boards" / "fixture-c10"}", "cifar10"'), "my_table.py", "exec"), {})
    tex = (tmp_path / "my_table.tex").read_text()
    assert "\\toprule" in tex and "deep\\_ensemble" in tex and "$\\pm$" in tex and "NaN" not in tex


def test_howtos_name_modules_and_functions_that_exist() -> None:
    """Every repository path the how-to guides name exists, and so does each registration function."""
    text = "".join(doc_page(f"how-to/{page}.md") for page in ("own-method", "method-contract", "extend", "published-numbers", "export",
                                                              "run", "sweeps", "gpu-check", "reliability", "python-api"))
    paths = set(re.findall(r"`((?:benchmark|tests|baselines|mimo)/[\w/.]+?)/?`(?!\]\()", text))  # not links to other repositories
    assert {"benchmark/backbones.py", "benchmark/data/base.py", "benchmark/leaderboard/reported.py", "tests/test_extension_points.py"} <= paths
    missing = [p for p in sorted(paths) if "<" not in p and not (REPO / p).exists()]
    assert not missing, missing
    from benchmark import backbones
    from benchmark.data import base as data_base
    from benchmark.evaluation import metric_specs
    from benchmark.leaderboard import plots

    for module, names in ((backbones, ["register_backbone", "Layers", "Network", "BasicBlock", "_stages"]),
                          (data_base, ["DATASETS", "DatasetSpec", "Split", "cached_splits", "DataError", "OODSpec"]),
                          (metric_specs, ["register_metric", "MetricSpec"]),
                          (plots, ["register_plot", "PlotSpec", "new_figure", "Skip", "severity_curve", "corruption_means", "pooled_reliability"])):
        assert [n for n in names if not hasattr(module, n)] == [], module.__name__


def test_published_numbers_sources_are_in_the_repository() -> None:
    """Every reported row's source is listed with its address in reported.py's references and the how-to guide."""
    from benchmark.leaderboard import reported

    doc = reported.__doc__ or ""
    assert "References" in doc and "shared/notes" not in doc
    compare = doc_page("how-to/published-numbers.md")
    for r in reported.REPORTED:
        assert r.url in doc and r.url in compare, r.url
        assert r.source.removeprefix("UB ") in doc
    for fact in ("Comparability", "PAPER_RECIPES", "2106.04767", "Havasi"):
        assert fact in compare and (fact in doc or fact == "Comparability")


def test_python_api_example_reads_the_published_results(capsys: pytest.CaptureFixture) -> None:
    """The Python API guide's example, as written: the published quick records and their leaderboard as data."""
    _, code = doc_block("python-api-example")
    exec(compile(code, "read_published.py", "exec"), {})
    out = capsys.readouterr().out
    assert "deterministic" in out and "mimo" in out and "cifar10-jpeg / resnet8" in out and "baseline" in out


def test_worked_reading_quotes_the_published_quick_leaderboard() -> None:
    """Every interval the worked reading quotes is in the published quick leaderboard, so a rebuilt board that
    changes them fails here instead of leaving the reading stale."""
    reading = doc_section("metrics.md", "A worked reading of the published quick leaderboard")
    board = (REPO / "results" / "reference" / "leaderboards" / "quick" / "leaderboard.md").read_text()
    intervals = [" ".join(i.split()) for i in re.findall(r"\[[-+]\d+\.\d+,\s+[-+]\d+\.\d+\]", reading)]
    assert len(intervals) >= 5, intervals
    assert [i for i in intervals if i not in board] == []
    # the differences quoted without their interval, perhaps to fewer decimals: each is a board's difference rounded
    # marked * (one seed: excludes 0) or † (several seeds: exceeds the seed spread), as the board marks them
    starred = re.findall(r"([-+]\d+\.\d+)(?: points)?[*\u2020]", reading)
    differences = [float(d) for d in re.findall(r"\| ([-+]\d+\.\d+) \[", board)]
    decimals = {s: len(s.split(".")[1]) for s in starred}
    unmatched = [s for s in starred if not any(round(d, decimals[s]) == float(s) for d in differences)]
    assert len(starred) >= 10 and unmatched == [], (starred, unmatched)
