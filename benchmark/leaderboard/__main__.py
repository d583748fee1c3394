"""``python -m benchmark.leaderboard RESULTS_DIR OUT_DIR [SUITE ...]``."""

from .write import main

if __name__ == "__main__":
    raise SystemExit(main())
