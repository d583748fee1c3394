"""The perf harness end to end on a tiny network: every measurement present, the table rendered.
(Its timings are figures of the benchmark script; nothing here asserts on a duration.)"""

from __future__ import annotations

import json

import torch

from benchmark.tools import perf
from benchmark.methods import Task
from benchmark.catalogue.methods import get_method


def test_perf_writes_a_record_and_a_table(tmp_path, capsys):
    argv = ["--backbone", "resnet8", "--width", "4", "--batch", "16", "--repeats", "2", "--large-batch", "8",
            "--methods", "deterministic,mimo,deep_ensemble", "--corrupted-images", "0", "--generation-images", "0", "--out", str(tmp_path)]
    assert perf.main(argv) == 0
    record = json.loads((tmp_path / "perf-cpu-resnet8-fp32.json").read_text())
    steps, inference = record["methods"]["train_step"], record["methods"]["inference"]
    assert set(steps) == {"deterministic", "mimo", "mimo rep=1", "deep_ensemble"}
    assert steps["deterministic"]["ratio_to_deterministic"] == 1.0 and steps["mimo"]["seconds"]["n"] == 2
    assert "note" in steps["deep_ensemble"]  # M x deterministic by construction
    assert set(inference) == {"deterministic", "mimo M=3", "deep_ensemble M=4", "deep_ensemble M=4 looped"}
    assert inference["deep_ensemble M=4 looped"]["batch_8"]["forward_passes"] == 4
    assert 0 < record["methods"]["data_path"]["share_of_step"] < 1
    assert record["provenance"]["host_allocator"]["requested"] == "tuned"
    table = (tmp_path / "perf-cpu-resnet8-fp32.md").read_text()
    assert "| deep_ensemble M=4 looped | 4 |" in table and "host allocator" in table


def test_looped_members_equal_the_one_pass_ensemble():
    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 4}, image_size=8)
    de = get_method("deep_ensemble").from_config({"members": 3}, task)
    members = []
    for m in range(3):
        torch.manual_seed(m)
        members.append(de.member().build().eval())
    x = torch.randn(4, 3, 8, 8)
    one_pass = de.combine_members(members).eval()
    with torch.no_grad():
        looped = perf.LoopedMembers(members)(x)
        torch.testing.assert_close(looped, one_pass(x), rtol=1e-4, atol=1e-5)
        # channels-last all the way (the grouped network keeps the input's layout after tiling it)
        one_pass.to(memory_format=torch.channels_last)
        torch.testing.assert_close(one_pass(x.contiguous(memory_format=torch.channels_last)), looped, rtol=1e-4, atol=1e-5)


def _fake_torch_uncertainty(monkeypatch):
    """A stand-in for torch-uncertainty's two model builders (their input conventions, a tiny network)."""
    import sys
    import types

    class Tiny(torch.nn.Module):
        def __init__(self, in_channels, outputs, members, mimo):
            super().__init__()
            self.members, self.mimo = members, mimo
            self.conv = torch.nn.Conv2d(in_channels * (members if mimo else 1), 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.linear = torch.nn.Linear(4, outputs * (members if mimo else 1))

        def forward(self, x):
            if self.mimo:  # "(m b) c h w -> b (m c) h w"
                m = self.members
                x = x.reshape(m, x.shape[0] // m, *x.shape[1:]).transpose(0, 1).reshape(x.shape[0] // m, -1, *x.shape[2:])
            out = self.linear(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
            return out.reshape(out.shape[0], self.members, -1).transpose(0, 1).reshape(-1, out.shape[1] // self.members) if self.mimo else out

    tu = types.ModuleType("torch_uncertainty")
    tu.__version__ = "0.0-test"
    models = types.ModuleType("torch_uncertainty.models")
    classification = types.ModuleType("torch_uncertainty.models.classification")
    classification.mimo_resnet = lambda in_channels, num_classes, arch, num_estimators, style: Tiny(in_channels, num_classes, num_estimators, True)
    classification.batched_resnet = lambda in_channels, num_classes, arch, num_estimators, style: Tiny(in_channels, num_classes, num_estimators, False)
    for name, module in (("torch_uncertainty", tu), ("torch_uncertainty.models", models), ("torch_uncertainty.models.classification", classification)):
        monkeypatch.setitem(sys.modules, name, module)


def test_peers_at_own_and_equal_settings_and_the_output_name(tmp_path, monkeypatch):
    _fake_torch_uncertainty(monkeypatch)
    monkeypatch.setattr(perf, "Task", lambda **kw: Task(**{**kw, "backbone": "resnet8", "backbone_options": {"width": 4}}))  # ours small too
    argv = ["--backbone", "resnet8", "--width", "4", "--batch", "8", "--repeats", "1", "--large-batch", "8", "--methods", "deterministic",
            "--corrupted-images", "0", "--generation-images", "0", "--channels-last", "--peers", "--peer-batch", "2",
            "--peer-compile", "", "--name", "perf-peers-test", "--out", str(tmp_path)]
    assert perf.main(argv) == 0
    assert not (tmp_path / "perf-cpu-resnet8-fp32-cl.json").exists()
    peers = json.loads((tmp_path / "perf-peers-test.json").read_text())["peers"]
    assert set(peers["settings"]) == {"own", "equal"} and peers["torch_uncertainty"] == "0.0-test"
    own, equal = peers["settings"]["own"], peers["settings"]["equal"]
    for name in ("mimo", "batchensemble"):
        assert own[name]["ours"] == {"channels_last": True, "compile": False} and own[name]["theirs"] == {"channels_last": False, "compile": False}
        assert equal[name]["ours"] == equal[name]["theirs"] == {"channels_last": True, "compile": False}
        assert own[name]["ours_over_theirs"] > 0 and peers[name] == own[name]  # the first setting's, where the record had it before
    table = (tmp_path / "perf-peers-test.md").read_text()
    assert "mimo ResNet-18 training step, same rows at own settings (ours channels-last, eager; theirs default layout, eager)" in table
    assert "batchensemble ResNet-18 training step, same rows at equal settings" in table


def test_peers_compile_is_passed_to_our_step(monkeypatch):
    _fake_torch_uncertainty(monkeypatch)
    monkeypatch.setattr(perf, "Task", lambda **kw: Task(**{**kw, "backbone": "resnet8", "backbone_options": {"width": 4}}))
    seen = []
    real = perf.StepBench

    def bench(*args, **kw):
        seen.append((args[0], kw.get("compile", False)))
        return real(*args, **{**kw, "compile": False})  # compiling is not what this checks

    monkeypatch.setattr(perf, "StepBench", bench)
    out = perf.measure_peers(2, "fp32", True, torch.device("cpu"), 1, lambda m: None, compile=("batchensemble",), settings=("own",))
    assert seen == [("mimo", False), ("batchensemble", True)] and set(out["settings"]) == {"own"}
    assert out["batchensemble"]["ours"]["compile"] is True  # recorded as asked
