"""Methods from outside the package: plug-in modules loaded through PLURES_PLUGINS or the
``plures.methods`` entry points, their errors, ``list`` and ``check-method``, the contract tests'
``--plures-plugin`` option, and the documentation's plug-in example run end to end.

Every plug-in module here is written to a temporary folder outside the repository; each test
unloads what it loaded, so other tests see only the built-in methods.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.methods import METHODS
from benchmark.catalogue import plugins as P
from benchmark.catalogue.methods import build_method, get_method, load_methods, method_names
from benchmark.catalogue.checks import ADVICE_CHECKS, CHECKS, contract_task, fixed_batch, run_checks
from tests.doc_text import doc_block

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
from benchmark.methods import Method, register_method


@register_method({name!r})
class Plugged(Method):
    """The deterministic network under another name."""
'''

BROKEN = '''
from benchmark.methods import EvalVariant, Method, register_method


@register_method({name!r})
class Broken(Method):
    """Declares two members for a one-member network."""

    def eval_variants(self, model):
        return [EvalVariant("", model, 1, 2)]
'''

GRAPH_BREAK = '''
import torch
from torch import nn
from benchmark.methods import Method, register_method


class Breaks(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        torch._dynamo.graph_break()  # what an untraceable operation does to a compiled step
        return logits * 1.0


@register_method({name!r})
class Breaking(Method):
    """The deterministic network with a graph break in its forward."""

    def build(self):
        return Breaks(super().build())
'''


@pytest.fixture(autouse=True)
def only_builtins_after(monkeypatch: pytest.MonkeyPatch):
    """Unload every plug-in a test loads and unregister every method it adds."""
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    load_methods()
    names, loaded, modules = set(METHODS._items), {p.module for p in P.loaded_plugins()}, set(sys.modules)
    yield
    for plugin in P.loaded_plugins():
        if plugin.module not in loaded:
            P.unload(plugin.module)
    for name in set(METHODS._items) - names:
        del METHODS._items[name]
    for module in set(sys.modules) - modules:  # the test's plug-in modules, imported outside the loader too
        if "plures_test_" in module:
            del sys.modules[module]


def outside_repo(folder: Path) -> Path:
    assert REPO not in folder.resolve().parents, folder
    return folder


def write_module(folder: Path, module: str, source: str) -> Path:
    outside_repo(folder).mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    return folder


def write_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A real installed-distribution record on ``site``: ``<dist>-0.1.dist-info/{METADATA,entry_points.txt}``."""
    info = outside_repo(site) / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text(f"[{P.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Loading


def test_plugin_named_in_the_environment_is_loaded_once_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = write_module(tmp_path / "mine", "plures_test_env", PLUGIN.format(name="plugged_env"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, " plures_test_env , ")
    assert "plugged_env" in method_names()
    cls = get_method("plugged_env")
    assert cls.__module__ == "plures_test_env" and cls.name == "plugged_env"
    assert P.plugin_of("plugged_env") == P.Plugin("plures_test_env", P.ENV_VAR, ("plugged_env",))
    assert P.plugin_of("mimo") is None
    module = sys.modules["plures_test_env"]
    load_methods()  # idempotent: not imported again
    monkeypatch.setenv(P.ENV_VAR, "plures_test_env,plures_test_env")
    load_methods()
    assert sys.modules["plures_test_env"] is module and get_method("plugged_env") is cls
    assert cli.main(["list"]) == 0
    methods = capsys.readouterr().out.splitlines()[0]
    assert "plugged_env [plug-in plures_test_env]" in methods and "mimo," in methods
    assert P.unload("plures_test_env") == ["plugged_env"]
    assert "plugged_env" not in METHODS and P.plugin_of("plugged_env") is None


def test_plugins_of_an_installed_distributions_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_module(tmp_path / "site", "plures_test_ep_module", PLUGIN.format(name="plugged_module"))
    write_module(site, "plures_test_ep_object", PLUGIN.format(name="plugged_object"))
    write_distribution(site, "plures-test-methods", {"by_module": "plures_test_ep_module", "by_object": "plures_test_ep_object:Plugged"})
    monkeypatch.syspath_prepend(str(site))
    assert {"plugged_module", "plugged_object"} <= set(method_names())
    by_module, by_object = P.plugin_of("plugged_module"), P.plugin_of("plugged_object")
    assert by_module.module == "plures_test_ep_module" and by_object.module == "plures_test_ep_object"
    assert by_module.source == "entry point by_module = 'plures_test_ep_module' in group 'plures.methods' of distribution plures-test-methods 0.1"
    assert "by_object = 'plures_test_ep_object:Plugged'" in by_object.source
    assert get_method("plugged_object") is sys.modules["plures_test_ep_object"].Plugged


# ---------------------------------------------------------------------------------------------
# Errors


def test_plugin_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    failing = PLUGIN.format(name="half_registered") + '\nraise RuntimeError("no GPU driver")\n'
    folder = write_module(tmp_path / "mine", "plures_test_failing", failing)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, "plures_test_failing")
    with pytest.raises(P.PluginError, match=r"^plug-in module 'plures_test_failing' \(from PLURES_PLUGINS\) failed to import: "
                                            r"RuntimeError: no GPU driver$") as info:
        load_methods()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "half_registered" not in METHODS  # what it registered before failing is undone
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err.startswith("error: plug-in module 'plures_test_failing' (from PLURES_PLUGINS) failed to import")

    monkeypatch.setenv(P.ENV_VAR, "plures_test_missing")
    with pytest.raises(P.PluginError, match=r"'plures_test_missing' .*ModuleNotFoundError: No module named 'plures_test_missing' .*PYTHONPATH"):
        method_names()


def test_entry_point_that_fails_to_import_names_its_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_module(tmp_path / "site", "plures_test_ep_failing", "import plures_test_not_installed\n")
    write_distribution(site, "plures-test-broken", {"broken": "plures_test_ep_failing"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(P.PluginError) as info:
        load_methods()
    assert str(info.value) == ("plug-in module 'plures_test_ep_failing' (from entry point broken = 'plures_test_ep_failing' in group "
                               "'plures.methods' of distribution plures-test-broken 0.1) failed to import: ModuleNotFoundError: "
                               "No module named 'plures_test_not_installed'")


def test_plugin_that_registers_a_taken_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = write_module(tmp_path / "mine", "plures_test_dup_builtin", PLUGIN.format(name="mimo"))
    write_module(folder, "plures_test_first", PLUGIN.format(name="twin"))
    write_module(folder, "plures_test_second", PLUGIN.format(name="solo") + PLUGIN.format(name="twin").replace("Plugged", "Again"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, "plures_test_dup_builtin")
    with pytest.raises(P.PluginError, match=r"^plug-in module 'plures_test_dup_builtin' \(from PLURES_PLUGINS\) registers method 'mimo' "
                                            r"\(class 'Plugged'\), but module 'mimo.method' registered 'mimo' first"):
        load_methods()
    assert cli.main(["check-method", "mimo"]) == 2  # every command stops while the plug-in is named
    assert "error: plug-in module 'plures_test_dup_builtin' (from PLURES_PLUGINS) registers method 'mimo'" in capsys.readouterr().err
    monkeypatch.delenv(P.ENV_VAR)
    assert get_method("mimo").__module__ == "mimo.method"

    monkeypatch.setenv(P.ENV_VAR, "plures_test_first,plures_test_second")
    with pytest.raises(P.PluginError, match=r"^plug-in module 'plures_test_second' \(from PLURES_PLUGINS\) registers method 'twin' "
                                            r"\(class 'Again'\), but plug-in module 'plures_test_first' \(from PLURES_PLUGINS\) "
                                            r"registered 'twin' first; choose another name$"):
        load_methods()
    assert "solo" not in METHODS  # what the failing plug-in registered is undone
    monkeypatch.setenv(P.ENV_VAR, "plures_test_first")
    assert get_method("twin").__module__ == "plures_test_first"


# ---------------------------------------------------------------------------------------------
# Checking a plug-in method


def test_check_method_reports_each_check_and_fails_on_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = write_module(tmp_path / "mine", "plures_test_broken", BROKEN.format(name="broken_members"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, "plures_test_broken")
    assert cli.main(["check-method", "broken_members", "--width", "4"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "method broken_members (plug-in plures_test_broken, from PLURES_PLUGINS) on resnet8, 5 classes, 16px:"
    status = {line.split()[1]: line.split()[0] for line in lines[1:-1]}
    assert status == {**{name: "PASS" for name in [*CHECKS, *ADVICE_CHECKS]}, "member-logits": "FAIL", "combination": "FAIL"}
    assert "the first eval variant declares members=2, method.test_members() is 1" in lines[1]
    assert lines[-1] == f"{len(CHECKS) + len(ADVICE_CHECKS) - 2} passed, 2 failed"
    assert cli.main(["check-method", "deterministic", "--set", "method.bogus=1"]) == 2  # the caller's bad option


def test_check_method_warns_of_a_graph_break_without_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = write_module(tmp_path / "mine", "plures_test_breaks", GRAPH_BREAK.format(name="breaking"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, "plures_test_breaks")
    assert cli.main(["check-method", "breaking", "--width", "4"]) == 0  # advice: the exit status stays 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split()[0] for line in lines[1:-1]}
    assert status == {**{name: "PASS" for name in CHECKS}, "compile": "WARN"}
    [warning] = [line for line in lines if line.startswith("WARN")]
    assert "1 graph break(s) in the training forward" in warning and "train.compile = false" in warning
    assert lines[-1] == f"{len(CHECKS)} passed, 0 failed, 1 warning"


def test_pytest_option_adds_a_plugins_methods_to_the_contract_tests(tmp_path: Path) -> None:
    folder = write_module(tmp_path / "mine", "plures_test_pytest", PLUGIN.format(name="plugged_pytest"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "OMP_NUM_THREADS": "1"}
    env.pop(P.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/test_methods_contract.py",
                          "--plures-plugin=plures_test_pytest", "-k", "plugged_pytest"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(CHECKS)} passed" in out.stdout


# ---------------------------------------------------------------------------------------------
# The plug-in example of the documentation (docs/how-to/own-method.md)


@pytest.fixture
def docs_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The documentation's example module written to a folder outside the repository, named in
    PLURES_PLUGINS: (folder, module name)."""
    filename, code = doc_block("plugin-example")
    module = filename.removesuffix(".py")
    folder = write_module(tmp_path / "research", module, code)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(P.ENV_VAR, module)
    return folder, module


def plugin_methods(module: str) -> tuple[str, ...]:
    [plugin] = [p for p in P.loaded_plugins() if p.module == module]
    return plugin.methods


def test_docs_example_passes_the_contract_checks(docs_plugin: tuple[Path, str]) -> None:
    _, module = docs_plugin
    load_methods()
    assert plugin_methods(module) == ("multihead",)
    for check, passed, message in run_checks("multihead") + run_checks("multihead", options={"members": 2}):
        assert passed, (check, message)
    method = get_method("multihead").from_config({"members": 3}, contract_task())
    assert method.forward_passes() == 1 and method.variant() == "M=3"
    assert method.build()(fixed_batch(contract_task())[0]).shape == (3, 12, 5)


def test_docs_suite_runs_the_example(docs_plugin: tuple[Path, str], tmp_path: Path) -> None:
    filename, text = doc_block("plugin-suite")
    suite = tmp_path / filename
    suite.write_text(text)
    meta, runs = C.load_suite(str(suite))
    assert "multihead" in {r["run"]["method"] for r in runs}
    for cfg in runs:  # every run resolves and builds its method (the plug-in's options checked)
        resolved = C.resolve(cfg)
        assert build_method(resolved, num_classes=10, image_size=32).name == resolved["run"]["method"]


def test_docs_example_runs_end_to_end_from_the_command_line(docs_plugin: tuple[Path, str], cifar10_dir, tiny_run_config: dict,
                                                            tmp_path: Path, capsys) -> None:
    """``python -m benchmark run --set run.method=multihead`` in a fresh process with PLURES_PLUGINS
    set writes a record; a leaderboard built from the records lists the method."""
    folder, module = docs_plugin
    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"run": {"method": "multihead"}, "method": {"members": 2}, "train": {"epochs": 1}})
    sets = [f"--set={table}.{key}={value}" for table, values in cfg.items() for key, value in values.items()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), P.ENV_VAR: module, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmark", "run", *sets, "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"),
                          "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--device", "cpu",
                          "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [path] = (tmp_path / "runs").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "completed", record.get("error")
    assert record["identity"]["method"] == "multihead" and record["identity"]["members"] == 2
    assert record["config"]["method"] == {"members": 2}
    # The leaderboard is a function of the records alone.
    assert cli.main(["leaderboard", "--results-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "boards")]) == 0
    [table] = (tmp_path / "boards").rglob("leaderboard.md")
    assert re.search(r"\|\s*multihead\s*\|\s*M=2\s*\|", table.read_text()), table.read_text()
