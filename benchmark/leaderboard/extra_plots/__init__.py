"""Leaderboard plots beyond the built-ins, one module each: each registers a
:class:`benchmark.leaderboard.plots.PlotSpec` (imported by :func:`benchmark.leaderboard.plots.load_plots`)."""
