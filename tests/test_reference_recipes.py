"""The recipe table (benchmark/suites/reference/recipes.toml) holds the paper suites: every
resolved value of every entry of `paper` and `imagenet` equals the table's, every key is stated,
a changed value in a copy of a suite fails the comparison, the generated page is the table's
rendering, and the paper sweep's dry run plans the table's learning rates, epochs and members."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.core import config as C
from benchmark.runner import member_config
from benchmark.tools import recipes as R
from tests.conftest import write_cifar_archive

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table() -> R.Table:
    return R.load_table()


def _recipe(table: R.Table, suite: str, entry: str) -> R.Recipe:
    (recipe,) = [r for r in table.recipes if r.suite == suite and entry in r.entries]
    return recipe


def _value(recipe: R.Recipe, key: str) -> object:
    (item,) = [i for i in recipe.items if i.key == key]
    return item.value


def test_the_paper_suites_agree_with_the_table(table: R.Table) -> None:
    assert R.check(table) == []
    covered = {(r.suite, e) for r in table.recipes for e in r.entries}
    for suite in ("paper", "imagenet"):
        names = {run["run"]["name"] for run in C.load_suite(suite)[1]}
        assert {(suite, n) for n in names} <= covered


# (suite, text in the suite file, its replacement, what the comparison must name)
MUTATIONS = [
    ("paper", "lr = 0.1\n", "lr = 0.05\n", "train.lr = 0.05, the table's recipe 'deterministic' says 0.1"),
    ("paper", "crop_pad = 2\n", "", "train.crop_pad = None, the table's recipe 'deterministic' says 2"),
    ("paper", 'init = "he_normal"\n', 'init = "torch"\n', "backbone.init = 'torch', the table's recipe 'mimo' says 'he_normal'"),
    ("paper", 'shortcut = "input"\n', "", "backbone.shortcut = 'preact', the table's recipe 'deterministic' says 'input'"),
    ("paper", "method = { members = 3, input_repetition = 0.0, batch_repetition = 4 }\ntrain = { epochs = 250",
     "method = { members = 3, input_repetition = 0.0, batch_repetition = 2 }\ntrain = { epochs = 250",
     "paper:mimo (seed 0): method.batch_repetition = 2, the table's recipe 'mimo' says 4"),
    ("paper", 'method = { rate = 0.1, samples = [1, 30], sites = "reference" }\ntrain = { lr = 0.05, weight_decay = 6e-4 }\n\n[[runs]]\nname = "deep_ensemble"',
     'method = { rate = 0.1, samples = [1, 30] }\ntrain = { lr = 0.05, weight_decay = 6e-4 }\n\n[[runs]]\nname = "deep_ensemble"',
     "paper:mc_dropout (seed 0): method.sites = 'branch', the table's recipe 'mc_dropout' says 'reference'"),
    ("paper", "train = { epochs = 250, milestones = [100, 200, 225], lr = 0.025, weight_decay = 2.4e-3 }\n\n[[runs]]\nname = \"mc_dropout\"",
     "train = { epochs = 250, milestones = [100, 200, 225], lr = 0.025, weight_decay = 3e-4 }\n\n[[runs]]\nname = \"mc_dropout\"",
     "paper:batchensemble (seed 0): train.weight_decay = 0.0003, the table's recipe 'batchensemble' says 0.0024"),
    ("paper", "[[runs]]\nname = \"deterministic\"\n", "[[runs]]\nname = \"deterministic-new\"\nrun = { method = \"deterministic\" }\n\n[[runs]]\nname = \"deterministic\"\n",
     "paper: entry 'deterministic-new' is in no recipe of the table"),
    ("paper", "[defaults.train]\n", "[defaults.train]\ngamma_unused_typo = 1\n", "unknown key(s) ['gamma_unused_typo'] in [train]"),
    ("imagenet", "train = { epochs = 150, lr = 0.1, warmup_epochs = 8.0,", "train = { epochs = 150, lr = 0.1, warmup_epochs = 5.0,",
     "imagenet:mimo (seed 0): train.warmup_epochs = 5.0, the table's recipe 'imagenet-mimo' says 8.0"),
    ("imagenet", "norm_weight_decay = 0.0\n", "", "train.norm_weight_decay = None, the table's recipe 'imagenet-deterministic' says 0.0"),
    ("imagenet", "nesterov = true\n", "nesterov = false\n", "train.nesterov = False, the table's recipe 'imagenet-deterministic' says True"),
]


@pytest.mark.parametrize("suite, old, new, expected", MUTATIONS, ids=[f"{m[0]}:{m[3][:48]}" for m in MUTATIONS])
def test_a_changed_copy_of_a_suite_fails_the_comparison(tmp_path: Path, table: R.Table, suite: str, old: str, new: str, expected: str) -> None:
    text = (C.SUITES_DIR / f"{suite}.toml").read_text()
    assert old in text, f"the mutation's target is no longer in {suite}.toml: {old!r}"
    mutated = tmp_path / f"{suite}.toml"
    mutated.write_text(text.replace(old, new, 1))
    try:
        problems = R.check(table, {suite: mutated})
    except C.ConfigError as exc:  # a key no section has fails before any comparison, naming it
        problems = [str(exc)]
    assert any(expected in p for p in problems), problems


def test_a_key_the_table_does_not_state_fails(table: R.Table) -> None:
    """A value the table neither states nor ignores is reported (here: the method's label, once
    taken out of [ignored])."""
    stricter = R.Table(table.reference, {k: v for k, v in table.ignored.items() if k != "method.label"}, table.shared, table.recipes, table.evaluation)
    problems = R.check(stricter)
    assert any("method.label = '' is stated nowhere in the table (recipe 'deterministic')" in p for p in problems), problems[:3]


def test_the_page_is_the_tables_rendering(table: R.Table) -> None:
    """results/recipes/recipes.md is regenerated by `python -m benchmark.tools.recipes` (this test fails until it is)."""
    page = (ROOT / R.PAGE).read_text()
    assert page == R.render(table)
    for recipe in table.recipes:
        assert f'<a id="{recipe.name}"></a>' in page
    departures = [i for r in table.recipes for i in r.own if i.departure] + list(table.evaluation)
    assert all(i.reason and i.effect for i in departures)
    assert page.count("](https://github.com/google/uncertainty-baselines/blob/") > 100  # sources link to their lines


def test_the_paper_sweep_dry_run_plans_the_tables_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                          table: R.Table) -> None:
    """`python -m benchmark sweep benchmark/sweeps/paper.toml --dry-run` (no SLURM here): every
    entry of the paper suite at seeds 0-2, each with the table's learning rate, epochs and members,
    and the deep ensembles' extra members (seeds 3-11) with the deterministic recipe's."""
    pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")
    from benchmark.sweep import cli as sweep_cli
    sweep_file = tmp_path / "paper.toml"
    shutil.copy(ROOT / "benchmark/sweeps/paper.toml", sweep_file)
    monkeypatch.chdir(tmp_path)  # the sweep's relative results and log folders, read by the plan
    # the launch looks the data up where the jobs will ([paths] data_dir = "data"): tiny CIFAR-10 and CIFAR-100 of batch size or more
    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=40, as_tar=False)
    write_cifar_archive(tmp_path / "data", "cifar100", per_batch=200, as_tar=False)
    planned = {}
    real = sweep_cli.format_plan

    def keep(sweep, tasks, done, *args, **kwargs):  # the plan the command prints, kept for the assertions
        planned["tasks"] = tasks
        return real(sweep, tasks, done, *args, **kwargs)

    monkeypatch.setattr(sweep_cli, "format_plan", keep)
    assert main(["sweep", str(sweep_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    tasks = planned["tasks"]
    assert all(t.run_id in out for t in tasks) and not list(tmp_path.glob("results/runs/**/*.json"))

    runs = [t for t in tasks if t.kind == "run"]
    entries = {run["run"]["name"] for run in C.load_suite("paper")[1]}
    assert {(t.name, t.seed) for t in runs} == {(e, s) for e in entries for s in (0, 1, 2)}
    for t in runs:
        resolved = C.resolve(t.config)
        recipe = _recipe(table, "paper", t.name)
        values = R.resolved_values(resolved)
        for key in ("train.lr", "train.epochs", "method.members"):
            assert R.same(values[key], _value(recipe, key)), (t.name, key, values[key], _value(recipe, key))

    members = [t for t in tasks if t.kind == "member"]
    deterministic = _recipe(table, "paper", "deterministic")
    assert sorted((t.seed, R.resolved_values(member_config(t.config, t.overrides))["run.dataset"]) for t in members) == \
        sorted((s, d) for s in range(3, 12) for d in ("cifar10", "cifar100"))
    for t in members:
        values = R.resolved_values(member_config(t.config, t.overrides))
        assert values["run.method"] == "deterministic" and values["method.members"] == 1
        assert R.same(values["train.lr"], _value(deterministic, "train.lr")) and R.same(values["train.epochs"], _value(deterministic, "train.epochs"))
        assert t.stage == 0
    assert all(t.stage == (1 if t.needs else 0) for t in runs)
