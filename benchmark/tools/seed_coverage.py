"""Coverage of the paired intervals over seeds: ``python -m benchmark.tools.seed_coverage``.

Simulates comparisons of two models A and B that are exchangeable (every true difference is 0):
one shared test set of ``--examples`` examples and 3 classes (each example's difficulty common to
every model), ``--seeds`` trained pairs, each trained model's noise scale drawn per seed as
``0.5 * exp(sigma * Z)`` (``--sigma``: the training randomness; 0: none). For each of
:data:`benchmark.evaluation.paired.OVER_SEEDS` it prints the share of 95% intervals that contain
0, per metric: the figures quoted in :mod:`benchmark.evaluation.paired`. One BLAS thread. Not
imported by the product.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..evaluation.paired import METRICS, OVER_SEEDS, paired_bootstrap


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def simulate(rng: np.random.Generator, n: int, seeds: int, sigma: float, k: int = 3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One comparison: ``seeds`` pairs ``(log_probs_a, log_probs_b, targets)`` on one test set."""
    y = rng.integers(0, k, n)
    shared = np.eye(k)[y] + rng.normal(size=(n, k))  # example difficulty, common to every model
    pairs = []
    for _ in range(seeds):
        noise = [0.5 * np.exp(sigma * rng.normal()) for _ in range(2)]  # each trained model's quality
        a, b = (_log_softmax(2.0 * (shared + s * rng.normal(size=(n, k)))) for s in noise)
        pairs.append((a, b, y))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.seed_coverage", description=__doc__.splitlines()[0])
    p.add_argument("--sims", type=int, default=2000, help="simulated comparisons (default: 2,000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per comparison, at least 2 (default: 3)")
    p.add_argument("--sigma", type=float, default=0.3, help="training randomness, log-scale sd of a model's noise (default: 0.3)")
    p.add_argument("--examples", type=int, default=400, help="test examples (default: 400)")
    p.add_argument("--resamples", type=int, default=300, help="bootstrap resamples (default: 300)")
    args = p.parse_args(argv)
    if args.seeds < 2 or args.sims < 1 or args.examples < 10 or args.resamples < 2 or args.sigma < 0:
        p.error(f"need --seeds >= 2, --sims >= 1, --examples >= 10, --resamples >= 2, --sigma >= 0; got {vars(args)}")
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(123)
    covered = {mode: np.zeros(len(METRICS)) for mode in OVER_SEEDS}
    start = time.perf_counter()
    with threadpool_limits(1):
        for i in range(args.sims):
            pairs = simulate(rng, args.examples, args.seeds, args.sigma)
            for mode in OVER_SEEDS:
                res = paired_bootstrap(pairs, n_resamples=args.resamples, n_splits=1, seed=i, over_seeds=mode)
                covered[mode] += [not res.differences[m].excludes_zero for m in METRICS]
    print(f"{args.sims} comparisons, {args.seeds} seeds, sigma {args.sigma}, {args.examples} examples, {args.resamples} resamples "
          f"({time.perf_counter() - start:.0f} s): % of 95% intervals containing the true difference 0")
    print("| over_seeds | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS))
    for mode in OVER_SEEDS:
        print(f"| {mode} | " + " | ".join(f"{100 * c / args.sims:.1f}" for c in covered[mode]) + " |")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
