"""The GPU check's first stages (``python -m benchmark.tools.gpu_check``): ``facts`` (the device,
driver, torch / CUDA / cuDNN versions, measured bf16 and fp32 matmul rates) and ``cuda-tests``
(``pytest -m cuda``, then every registered method's contract checks on the device)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any

import torch

from .gpu_check_base import ROOT, CheckState


def facts(check: CheckState, budget: float) -> tuple[str, str]:
    from .perf import matmul_flops_per_second

    s = check.sizes
    facts: dict[str, Any] = {"device": str(check.device), "smoke": check.smoke, "torch": torch.__version__, "cuda": torch.version.cuda,
                             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                             "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                             "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if check.device.type == "cuda":
        p = torch.cuda.get_device_properties(check.device)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count, memory_gib=p.total_memory / 2**30)
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            facts["nvidia_smi"] = q.stdout.strip()
            facts["driver"] = q.stdout.split(",")[1].strip() if q.returncode == 0 and "," in q.stdout else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            facts["driver"], facts["nvidia_smi"] = None, f"not available: {exc}"
    else:
        facts.update(gpu=None, driver=None, cpu=platform.processor() or platform.machine())
    for precision in ("bf16", "fp32"):
        facts[f"matmul_{precision}"] = matmul_flops_per_second(check.device, precision, n=s.matmul_n, repeats=s.matmul_repeats)
    check.results["facts"] = facts
    check.write_json("facts.json", facts)
    what = facts["gpu"] or f"CPU ({facts.get('cpu')})"
    return "ok", (f"{what}, driver {facts['driver']}, torch {facts['torch']}, CUDA {facts['cuda']}; matmul bf16 "
                  f"{facts['matmul_bf16']['flops_per_second'] / 1e12:.3g} TFLOP/s, fp32 {facts['matmul_fp32']['flops_per_second'] / 1e12:.3g} TFLOP/s")


def cuda_tests(check: CheckState, budget: float) -> tuple[str, str]:
    from ..catalogue.checks import ALL_CHECKS, contract_task, run_checks
    from ..catalogue.methods import method_names

    end = time.monotonic() + budget
    files = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_*.py")) if "pytest.mark.cuda" in p.read_text()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "cuda", *files]
    check.log(f"running {' '.join(cmd[1:])}")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(5.0, 0.6 * budget))
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {exc.timeout:.0f}s", None
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    check.write_text("logs/pytest-cuda.log", output)
    last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
    pytest_ok = code in (0, 5)  # 5: nothing collected
    check.log(f"pytest -m cuda: exit {code}: {last}")
    rows, skipped = [], []
    if check.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(check.device)
    task = contract_task()
    for name in method_names():
        if time.monotonic() > end:
            skipped.append(name)
            continue
        t = time.perf_counter()
        for r in run_checks(name, task, checks=ALL_CHECKS, device=check.device):
            rows.append({"method": name, "check": r.name, "passed": r.passed, "message": r.message})
            if not r.passed:
                check.log(f"contract FAIL {name} {r.name}: {r.message}")
        check.log(f"contract checks {name}: {time.perf_counter() - t:.1f}s")
    peak = torch.cuda.max_memory_allocated(check.device) / 2**20 if check.device.type == "cuda" else None
    passed = sum(r["passed"] for r in rows)
    check.results["cuda_tests"] = {"pytest_files": files, "pytest_exit": code, "pytest_result": last, "contract": rows,
                                  "contract_passed": passed, "contract_total": len(rows), "methods_skipped": skipped, "peak_memory_mb": peak}
    check.write_json("cuda-tests.json", check.results["cuda_tests"])
    table = ["| method | check | result | message |", "|---|---|---|---|"] + [
        f"| {r['method']} | {r['check']} | {'PASS' if r['passed'] else 'FAIL'} | {r['message']} |" for r in rows]
    check.write_text("contract.md", f"# Contract checks on {check.device}\n\n" + "\n".join(table) + "\n")
    status = "ok" if pytest_ok and passed == len(rows) and not skipped else ("partial" if skipped and passed == len(rows) else "failed")
    note = f"pytest -m cuda ({len(files)} files): {last}; contract checks {passed}/{len(rows)} passed on {check.device}"
    if skipped:
        note += f"; not checked (budget): {', '.join(skipped)}"
    if peak is not None:
        note += f"; peak memory {peak:.0f} MiB"
    return status, note
