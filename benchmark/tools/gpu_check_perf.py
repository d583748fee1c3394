"""The GPU check's perf stages (``python -m benchmark.tools.gpu_check``): ``perf`` (the perf harness
on the device, backbone by backbone within the budget) and ``peers`` (torch-uncertainty's MIMO and
BatchEnsemble steps beside ours, installing it from ``--wheels`` when it is missing)."""

from __future__ import annotations

import subprocess
import sys
import time

from .gpu_check_base import CheckState, fmt_s


def perf(check: CheckState, budget: float) -> tuple[str, str]:
    from ..catalogue.methods import method_names
    from .perf import perf_result, render_table

    s = check.sizes
    end = time.monotonic() + budget
    methods = s.perf_methods or method_names()
    ceiling = check.results.get("facts", {}).get(f"matmul_{s.precision}")
    done, skipped, elapsed = [], [], 0.0
    check.results["perf"] = {}
    for i, (label, backbone, options, batch) in enumerate(s.perf_backbones):
        left = end - time.monotonic()
        # the next backbone costs at least what the last one did (mostly fixed costs: builds, FLOP counts,
        # batch-1 latencies); WRN-28-10's steps add about half as much again
        need = elapsed * (1.5 if backbone == "wrn28-10" else 1.0)
        if left < max(need, 0.08 * budget):
            skipped.append(label)
            check.log(f"perf {label}: skipped ({fmt_s(left)} left, about {fmt_s(need)} needed)")
            continue
        t = time.monotonic()
        result = perf_result(check.device, list(methods), backbone, dict(options), batch, s.precision, s.channels_last, s.perf_repeats,
                             s.perf_large_batch, check.log, corrupted_images=s.corrupted_images if i == 0 else 0, matmul=ceiling)
        elapsed = time.monotonic() - t
        tag = f"perf-{check.device.type}-{label}"
        check.write_json(f"perf/{tag}.json", result)
        check.write_text(f"perf/{tag}.md", render_table(result))
        check.results["perf"][label] = result
        done.append(f"{label} ({fmt_s(elapsed)})")
    note = "measured " + (", ".join(done) or "nothing") + (f"; skipped (budget): {', '.join(skipped)}" if skipped else "")
    return ("ok" if not skipped else "partial" if done else "skipped"), note


def import_peers(check: CheckState) -> str | None:
    """None when torch-uncertainty imports (installing it from ``--wheels`` if needed), else why not."""
    try:
        import torch_uncertainty  # noqa: F401

        return None
    except Exception as exc:  # noqa: BLE001
        first = f"{type(exc).__name__}: {exc}"
    wheels = sorted(check.wheels.glob("*.whl")) if check.wheels.is_dir() else []
    if not wheels:
        return f"torch-uncertainty not importable ({first}) and no wheels in {check.wheels}"
    site = check.scratch / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *map(str, wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    check.write_text("logs/peers-install.log", proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return f"installing {len(wheels)} wheels failed (logs/peers-install.log)"
    sys.path.insert(0, str(site))
    try:
        import torch_uncertainty  # noqa: F401,F811

        return None
    except Exception as exc:  # noqa: BLE001
        return f"torch-uncertainty not importable after installing {len(wheels)} wheels: {type(exc).__name__}: {exc}"


def peers(check: CheckState, budget: float) -> tuple[str, str]:
    from .perf import measure_peers

    s = check.sizes
    why = import_peers(check)
    if why:
        check.results["peers"] = {"skipped": why}
        check.write_json("peers.json", check.results["peers"])
        return "skipped", why
    end = time.monotonic() + budget
    out, notes = {}, []
    for precision, channels_last in ((s.precision, s.channels_last), ("fp32", False)):
        label = f"{precision}{'-cl' if channels_last else ''}"
        if label in out:
            continue
        if out and time.monotonic() + check.results.get("_peer_seconds", 0.0) > end:
            notes.append(f"{label} skipped (budget)")
            continue
        t = time.monotonic()
        out[label] = measure_peers(s.peer_batch, precision, channels_last, check.device, s.peer_repeats, check.log, settings=("equal",))
        check.results["_peer_seconds"] = time.monotonic() - t
        for name in ("mimo", "batchensemble"):
            if name in out[label]:
                notes.append(f"{name} {label}: ours/theirs {out[label][name]['ours_over_theirs']:.3f}")
    check.results["peers"] = out
    check.write_json("peers.json", out)
    return "ok", "; ".join(notes) or "measured"
