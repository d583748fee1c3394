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
