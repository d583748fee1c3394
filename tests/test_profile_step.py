"""The per-operator profile tool on tiny settings: the files' structure, shares that sum to one, the
categorisation rules. (Its timings are figures of the tool; nothing here asserts on a duration.)"""

from __future__ import annotations

import json
import math

import torch

from benchmark.tools import profile_step as P


def test_profile_step_writes_a_record_and_a_table(tmp_path):
    # aot_eager: the compiled rows go through torch.compile's graph capture without inductor's C++ build (fast)
    argv = ["--width", "4", "--batch", "8", "--warmup", "1", "--repeats", "1", "--steps", "1", "--top", "5",
            "--compile-backend", "aot_eager", "--threads", "1", "--out", str(tmp_path)]
    threads = torch.get_num_threads()  # one thread: fast on a busy machine too (two spin-waiting threads on two busy cores are not)
    try:
        assert P.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "profile-cpu-resnet8-fp32.json").read_text())
    assert record["command"].startswith("python -m benchmark.tools.profile_step --width 4")
    assert record["cpu_model"] and record["torch"] and record["threads"]["intra_op"] == 1 and record["created"]
    assert record["backbone"] == "resnet8" and record["backbone_options"] == {"width": 4} and record["batch"] == 8
    assert record["steps"] == 1 and record["repeats"] == 1 and set(record["settings"]) == {"before", "now"}
    assert [r[0] for r in record["category_rules"]] == P.CATEGORIES[:-1]
    methods = record["methods"]
    assert record["rows"] == ["deterministic", "mimo", "batchensemble", "packed"] and set(methods) == set(record["rows"])
    # the quick suite's rows: their options, and compile where the suite compiles (all four)
    assert methods["mimo"]["options"] == {"members": 3, "input_repetition": 0.0, "batch_repetition": 1}
    assert methods["packed"]["options"] == {"members": 4, "alpha": 2.0, "gamma": 1}
    for name, entry in methods.items():
        before, now = entry["settings"]["before"], entry["settings"]["now"]
        assert (before["channels_last"], before["compile"]) == (False, False)
        assert now["channels_last"] is True and now["compile"] is True  # the quick suite compiles all four rows
        for s in (before, now):
            assert s["step_ms"]["n"] == 1 and s["step_ms"]["median"] > 0 and s["profiled_step_ms"] > 0
            assert set(s["categories"]) == set(P.CATEGORIES)
            assert math.isclose(sum(c["share"] for c in s["categories"].values()), 1.0, abs_tol=1e-6)
            assert math.isclose(sum(c["self_ms_per_step"] for c in s["categories"].values()), s["profiled_step_ms"], rel_tol=1e-6)
            assert 0 < len(s["top_ops"]) <= 5 and all(o["category"] in P.CATEGORIES for o in s["top_ops"])
            assert len(s["settle_steps"]) == 1 and 1 <= s["settle_steps"][0] <= 10 and len(s["profiled_step_page_faults"]) == 1
            assert 0 <= s["discarded_sessions"] <= 2
            assert s["categories"]["convolution forward"]["share"] > 0 and s["categories"]["optimizer"]["share"] > 0
        assert entry["speedup_now_over_before"] > 0
    table = (tmp_path / "profile-cpu-resnet8-fp32.md").read_text()
    assert "| packed |" in table and "## Categorisation rules" in table and 'What "other" contains' in table
    assert record["cpu_model"] in table and record["command"] in table


def test_categorise_by_name_and_enclosing_operator():
    assert P.categorise("aten::add_", ["Optimizer.step#SGD.step", P.STEP_LABEL]) == "optimizer"
    assert P.categorise("aten::empty", ["aten::mkldnn_convolution", "aten::_convolution"]) == "convolution forward"
    assert P.categorise("aten::copy_", ["aten::to", "aten::convolution_backward"]) == "copies and layout reorders"
    assert P.categorise("aten::mul", ["MulBackward0", "autograd::engine::evaluate_function: MulBackward0"]) == "element-wise and activation"
    assert P.categorise("aten::add", ["aten::native_batch_norm_backward"]) == "batch norm"
    assert P.categorise("autograd::engine::evaluate_function: ConvolutionBackward0", [P.STEP_LABEL]) == "framework overhead"
    assert P.categorise("aten::index", [P.DATA_LABEL, P.STEP_LABEL]) == "data path (batch formation)"
    graph = "## Call CompiledFxGraph fhxm7jg7cur4l7c7tgi65pp3t4il2pvryor7qmoke4noh4vz462i ##"
    assert P.categorise(graph, ["CompiledFunctionBackward"]) == "compiled graph kernels"
    assert P.categorise("aten::empty_strided", [graph]) == "compiled graph kernels"
    assert P.categorise("aten::convolution_backward", [graph]) == "convolution backward"
    assert P.display_name(graph, ["CompiledFunctionBackward", "x"]) == "compiled graph (backward)"
    assert P.display_name(graph, ["CompiledFunction"]) == "compiled graph (forward)"
    assert P.categorise("aten::_log_softmax", [P.STEP_LABEL]) == "other"
