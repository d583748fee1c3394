"""Cost of the leaderboard's statistics: ``python -m benchmark.tools.time_statistics``.

Times the paired bootstrap (:func:`benchmark.evaluation.paired.paired_bootstrap`, test-time
cross-validated temperatures) and the deep-ensemble curve behind DEE
(:func:`benchmark.evaluation.dee.dee_curve`) on synthetic predictions of a given size, and prints
CPU seconds (``time.process_time``, the figure that survives a loaded machine) beside wall seconds.
Set ``OMP_NUM_THREADS=1`` for one BLAS thread. Not imported by the product.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..evaluation.dee import dee_curve
from ..evaluation.paired import paired_bootstrap


def synthetic_log_probs(rng: np.random.Generator, n: int, k: int, members: int, targets: np.ndarray) -> np.ndarray:
    """Member log-probabilities ``[members, n, k]`` of noisy classifiers that favour the target."""
    logits = rng.normal(size=(members, n, k))
    logits[:, np.arange(n), targets] += 2.0
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def combined(members: np.ndarray) -> np.ndarray:
    """Log of the mean member probability ``[n, k]``."""
    top = members.max(axis=0)
    return top + np.log(np.exp(members - top).mean(axis=0))


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args, **kwargs)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.time_statistics", description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10_000, help="test examples (default: 10,000)")
    p.add_argument("--classes", type=int, default=10, help="classes (default: 10)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1,000)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per row (>= 2: t interval with the seed spread; default: 1)")
    p.add_argument("--members", type=int, default=4, help="deep-ensemble members for the DEE curve (default: 4)")
    args = p.parse_args(argv)
    for name in ("examples", "classes", "resamples", "seeds", "members"):
        if getattr(args, name) < (2 if name in ("examples", "classes") else 1):
            p.error(f"--{name} must be at least {2 if name in ('examples', 'classes') else 1}, got {getattr(args, name)}")
    rng = np.random.default_rng(0)
    targets = rng.integers(0, args.classes, size=args.examples)
    pairs = [(combined(synthetic_log_probs(rng, args.examples, args.classes, 1, targets)),
              combined(synthetic_log_probs(rng, args.examples, args.classes, 2, targets)), targets) for _ in range(args.seeds)]
    boot = timed(paired_bootstrap, pairs, n_resamples=args.resamples)
    curve = timed(dee_curve, synthetic_log_probs(rng, args.examples, args.classes, args.members, targets), targets)
    print(f"| statistic | size | CPU s | wall s |\n|---|---|---:|---:|\n"
          f"| paired bootstrap (test-cv temperatures) | {args.examples} examples, {args.classes} classes, {args.resamples} resamples, "
          f"{args.seeds} seed(s) | {boot[0]:.2f} | {boot[1]:.2f} |\n"
          f"| DEE curve (test-cv) | {args.members} members, {args.examples} examples, {args.classes} classes | {curve[0]:.2f} | {curve[1]:.2f} |")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
