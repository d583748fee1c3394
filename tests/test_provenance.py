"""Honest provenance: untracked files under the packages make the checkout dirty, and a record
names the method modules that ran with their content hashes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from benchmark.records import REPO_ROOT, git_state, module_provenance
from benchmark.runner import Environment, run_experiment

PLUGIN = '''
from benchmark.methods.base import Method


class UntrackedMethod(Method):
    """A method that lives in a file git does not know."""
'''


def env_for(tmp_path: Path, data_dir: Path) -> Environment:
    return Environment(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo, check=True, capture_output=True)


def test_untracked_file_under_a_package_is_dirty(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "benchmark").mkdir(parents=True)
    (repo / "benchmark" / "__init__.py").write_text("")
    (repo / ".gitignore").write_text("__pycache__/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    assert git_state(repo)["git_dirty"] is False
    (repo / "notes.txt").write_text("not code of the packages")  # untracked outside the packages: still clean
    (repo / "benchmark" / "__pycache__").mkdir()
    (repo / "benchmark" / "__pycache__" / "x.pyc").write_bytes(b"")  # ignored: still clean
    assert git_state(repo)["git_dirty"] is False
    (repo / "benchmark" / "my_method.py").write_text(PLUGIN)  # a new, untracked method module
    state = git_state(repo)
    assert state["git_dirty"] is True and state["git_untracked"] == ["benchmark/my_method.py"]
    _git(repo, "add", "benchmark/my_method.py")
    _git(repo, "commit", "-q", "-m", "method")
    assert git_state(repo) == {**state, "git_dirty": False, "git_untracked": [], "git_commit": git_state(repo)["git_commit"]}


def test_method_module_of_an_untracked_file_is_hashed(tmp_path: Path) -> None:
    source = tmp_path / "untracked_method_mod.py"
    source.write_text(PLUGIN)
    spec = importlib.util.spec_from_file_location("untracked_method_mod", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["untracked_method_mod"] = module
    try:
        spec.loader.exec_module(module)
        entries = module_provenance([module.UntrackedMethod])
    finally:
        del sys.modules["untracked_method_mod"]
    by_module = {e["module"]: e for e in entries}
    mine = by_module["untracked_method_mod"]
    assert mine["path"] == str(source.resolve()) and mine["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    base = by_module["benchmark.methods.base"]  # the contract's defaults ran too; inside the checkout: a relative path
    assert base["path"] == "benchmark/methods/base.py"
    assert base["sha256"] == hashlib.sha256((REPO_ROOT / "benchmark/methods/base.py").read_bytes()).hexdigest()


def test_record_names_the_method_modules_that_ran(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    cfg = {**tiny_run_config, "run": {**tiny_run_config["run"], "method": "deep_ensemble"}, "method": {"members": 2},
           "train": {**tiny_run_config["train"], "epochs": 1}}
    paths = run_experiment(cfg, env_for(tmp_path, root))
    rec = json.loads(paths[0].read_text())
    prov = rec["provenance"]
    assert rec["schema_version"] == 1 and isinstance(prov["git_dirty"], (bool, type(None))) and isinstance(prov["git_untracked"], list)
    modules = {e["module"]: e for e in prov["method_modules"]}
    assert {"baselines.deep_ensemble", "baselines.deterministic"} <= set(modules), modules  # the ensemble and its members' method
    for entry in modules.values():
        assert entry["sha256"] == hashlib.sha256((REPO_ROOT / entry["path"]).read_bytes()).hexdigest()


def test_provenance_names_the_cpu_kind(tmp_path) -> None:
    """Every record states the CPU it ran on: model and the instruction sets that decide which kernels are fast
    (fp32 training differs between CPU kinds); the leaderboard's reference comparison shows it."""
    from benchmark.core.cpu import capability_of, parse_cpuinfo
    from benchmark.leaderboard.reproduced import cpu_kind
    from benchmark.records import provenance

    cpu = provenance("cpu")["cpu"]
    assert cpu["model"] and set(cpu["capability"]) == {"avx2", "avx512", "avx512_bf16", "amx"}
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\ncore id\t\t: 0\n\n"
    info = parse_cpuinfo(text)
    assert info["model"] == "AMD EPYC 7B13" and capability_of(info["flags"]) == {"avx2": True, "avx512": False, "avx512_bf16": False, "amx": False}
    rec = {"provenance": {"cpu": {"model": "AMD EPYC 7B13", "capability": capability_of(info["flags"])}}}
    assert cpu_kind(rec) == "AMD EPYC 7B13 (avx2)"
