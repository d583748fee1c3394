"""Equal-cost single models: the ``label`` option that names them, the widened WRN, the suite entries
whose FLOPs per example match the ensembles they name (measured with torch's FLOP counter), and the
leaderboard plot that pairs each ensemble with its equal-cost single model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from benchmark.backbones import Layers, build_backbone
from benchmark.catalogue.methods import get_method
from benchmark.core import config as C
from benchmark.evaluation.cost import flops_per_example
from benchmark.methods import Task

CLASSES = {"cifar10": 10, "cifar100": 100, "cifar10-jpeg": 10}
MATCHED = re.compile(r"FLOPs matched to (.+)$")
TOL = 1.10  # the suites' equal-cost models lie within 10% of the FLOPs they claim to match
EXEMPT = {("mc_dropout", "K=30")}  # 30x the FLOPs: WRN-28-55, about 1.1B parameters, left out of the paper suite


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The label option and the widened WRN


def test_label_names_the_variant_and_methods_with_their_own_variants_refuse_it() -> None:
    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 8}, image_size=16)
    det = get_method("deterministic")
    plain, named = det.from_config({}, task), det.from_config({"label": "width x2, FLOPs matched to deep_ensemble M=4"}, task)
    assert plain.variant() == "" and named.variant() == "width x2, FLOPs matched to deep_ensemble M=4"
    [v] = named.eval_variants(named.build())
    assert (v.label, v.forward_passes, v.members) == ("width x2, FLOPs matched to deep_ensemble M=4", 1, 1)
    with pytest.raises(ValueError, match="'mc_dropout' labels its own variants and takes no label option"):
        get_method("mc_dropout").from_config({"label": "x"}, task)
    with pytest.raises(C.ConfigError, match=r"method\.label = 3 is not valid: expected a string"):
        C.check_options("method", "deterministic", {"label": 3}, det.Options)


def test_wrn_widen_option() -> None:
    def params(**kw) -> int:
        return sum(p.numel() for p in build_backbone("wrn28-10", Layers(), **kw).parameters())

    assert params() == params(widen=10)
    assert abs(params(widen=20) - 145.8e6) < 0.1e6  # WRN-28-20: about 4x WRN-28-10's 36.5M
    with pytest.raises(ValueError, match="valid options: init, shortcut, widen"):
        build_backbone("wrn28-10", Layers(), width=3)


def test_a_labelled_run_carries_the_label_in_its_identity(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    from benchmark.runner import Environment, run_experiment

    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"backbone": {"width": 6}, "method": {"label": "width x1.5, FLOPs matched to deep_ensemble M=2"},
                                    "train": {"epochs": 1}})
    env = Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                      checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)
    [path] = run_experiment(cfg, env)
    rec = json.loads(path.read_text())
    assert rec["identity"]["method"] == "deterministic" and rec["identity"]["variant"] == "width x1.5, FLOPs matched to deep_ensemble M=2"
    assert "-M=" not in rec["run_id"] and rec["run_id"].startswith("deterministic-")


# ---------------------------------------------------------------------------------------------
# The suite entries


def first_seed(suite: str) -> list[dict]:
    """The suite's entries at their first seed, resolved."""
    seen, out = set(), []
    for cfg in C.load_suite(suite)[1]:
        if cfg["run"]["name"] not in seen:
            seen.add(cfg["run"]["name"])
            out.append(C.resolve(cfg))
    return out


def variant_flops(resolved: dict, skip: set[tuple[str, str]] = frozenset()) -> dict[str, tuple[float, int]]:
    """{variant label: (FLOPs per example, members)} of one entry's freshly built network (random weights)."""
    r = resolved["run"]
    task = Task(num_classes=CLASSES[r["dataset"]], backbone=r["backbone"], backbone_options=dict(resolved["backbone"]), image_size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        method = get_method(r["method"]).from_config(dict(resolved["method"]), task)
        out = {}
        for v in method.eval_variants(method.build()):
            if (r["method"], v.label) not in skip:
                out[v.label] = (float(flops_per_example(v.network, torch.randn(1, 3, 32, 32))), v.members)
    return out


def matched(label: str) -> list[tuple[str, str]]:
    """``"width x2, FLOPs matched to mc_dropout K=4, masksembles M=4,scale=2"`` -> [(method, variant), ...]."""
    m = MATCHED.search(label)
    assert m, f"an equal-cost label must end 'FLOPs matched to <method> <variant>, ...': {label!r}"
    return [tuple(part.split(" ", 1)) for part in m.group(1).split(", ")]


def check_suite(suite: str, datasets: set[str]) -> None:
    entries = [e for e in first_seed(suite) if e["run"]["dataset"] in datasets]
    labelled = [e for e in entries if e["method"].get("label")]
    assert labelled, f"suite {suite} has no equal-cost single model"
    flops = {e["run"]["name"]: variant_flops(e, EXEMPT) for e in entries}
    for dataset in datasets:
        here = [e for e in entries if e["run"]["dataset"] == dataset]
        singles = {e["run"]["name"]: flops[e["run"]["name"]][e["method"].get("label", "")][0]
                   for e in here if e["run"]["method"] == "deterministic"}
        # every equal-cost model costs what the rows it names cost
        for e in (e for e in here if e["method"].get("label")):
            mine = singles[e["run"]["name"]]
            for method, variant in matched(e["method"]["label"]):
                theirs = [flops[o["run"]["name"]][variant][0] for o in here if o["run"]["method"] == method and variant in flops[o["run"]["name"]]]
                assert theirs, f"{suite}/{e['run']['name']}: no {method} {variant} row in the suite"
                assert all(1 / TOL <= mine / t <= TOL for t in theirs), (e["run"]["name"], method, variant, mine, theirs)
        # every ensemble row has a single model of its FLOPs (a labelled one, or the plain deterministic run)
        for e in here:
            for variant, (f, members) in flops[e["run"]["name"]].items():
                if members < 2 or (e["run"]["method"], variant) in EXEMPT:
                    continue
                assert any(1 / TOL <= s / f <= TOL for s in singles.values()), (suite, dataset, e["run"]["name"], variant, f, singles)


def test_quick3_has_an_equal_cost_single_model_for_every_ensemble_row() -> None:
    check_suite("quick3", {"cifar10-jpeg"})
    assert not any(e["method"].get("label") for e in first_seed("quick"))  # not in make bench


def test_paper_equal_cost_entries_are_the_same_for_cifar10_and_cifar100() -> None:
    entries = first_seed("paper")
    c10 = {e["run"]["name"]: e for e in entries if e["run"]["dataset"] == "cifar10"}
    c100 = {e["run"]["name"].removesuffix("-c100"): e for e in entries if e["run"]["dataset"] == "cifar100"}
    assert c10.keys() == c100.keys()
    for name, e in c10.items():
        assert (e["method"], e["backbone"], e["train"]) == (c100[name]["method"], c100[name]["backbone"], c100[name]["train"]), name
    assert sorted(e["backbone"].get("widen") for e in c10.values() if e["method"].get("label")) == [5, 7, 20, 22]


@pytest.mark.slow
def test_paper_has_an_equal_cost_single_model_for_every_ensemble_row() -> None:
    check_suite("paper", {"cifar10"})  # WRN-28-5 .. WRN-28-22 and the ensembles built and counted: 16 min on a loaded 2-core CPU


# ---------------------------------------------------------------------------------------------
# The plot


def record(method: str, members: int, flops: float, acc: float, nll: float, seed: int = 0) -> dict:
    return {"identity": {"method": method, "members": members, "seed": seed}, "cost": {"flops_per_example": flops},
            "metrics": {"clean": {"accuracy": acc, "nll": nll}}}


def test_the_plot_pairs_each_ensemble_with_the_single_model_of_its_flops() -> None:
    from benchmark.leaderboard.extra_plots.equal_cost import equal_cost_pairs
    from benchmark.leaderboard.plots import PLOTS, Skip, load_plots, render

    groups = [
        ("deterministic", [record("deterministic", 1, 25.0e6, 0.80, 0.60), record("deterministic", 1, 25.0e6, 0.82, 0.58, 1)]),
        ("deterministic width x1.44", [record("deterministic", 1, 51.1e6, 0.84, 0.52)]),
        ("deterministic width x2", [record("deterministic", 1, 98.2e6, 0.86, 0.48)]),
        ("deep_ensemble M=2", [record("deep_ensemble", 2, 50.0e6, 0.85, 0.47)]),
        ("mc_dropout K=4", [record("mc_dropout", 4, 100.0e6, 0.81, 0.55)]),
        ("mc_dropout K=1", [record("mc_dropout", 1, 25.0e6, 0.80, 0.60)]),  # one member: not an ensemble
        ("mimo M=3", [record("mimo", 3, 26.8e6, 0.81, 0.57)]),
        ("subnetwork M=4", [record("subnetwork", 4, 6.9e6, 0.70, 0.90)]),  # no single model within 15%
    ]
    pairs = [(e.label, s.label) for e, s in equal_cost_pairs(groups)]
    assert pairs == [("deep_ensemble M=2", "deterministic width x1.44"), ("mc_dropout K=4", "deterministic width x2"),
                     ("mimo M=3", "deterministic")]
    det = next(e for e, s in equal_cost_pairs(groups) if e.label == "mimo M=3")
    assert det.values["accuracy"][0] == pytest.approx(0.81)
    single = next(s for e, s in equal_cost_pairs(groups) if e.label == "mimo M=3")
    assert single.values["accuracy"] == pytest.approx((0.81, math.sqrt(2 * 0.01**2)))  # mean and std over the two seeds
    load_plots()
    spec = PLOTS.get("equal_cost")
    fig = render(spec.draw, groups)
    assert len(fig.axes) == 2  # accuracy and NLL (no corrupted metrics)
    with pytest.raises(Skip, match="no ensemble row of this block has a single-model"):
        render(spec.draw, [g for g in groups if g[0] in ("deterministic", "subnetwork M=4")])
