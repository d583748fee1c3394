"""The statistics timing tool runs at a small size and reports both statistics (it asserts no time)."""

from __future__ import annotations

import pytest

from benchmark.tools import time_statistics


def test_time_statistics_reports_both_rows(capsys) -> None:
    assert time_statistics.main(["--examples", "200", "--classes", "5", "--resamples", "20", "--members", "2"]) == 0
    out = capsys.readouterr().out
    assert "| paired bootstrap (test-cv temperatures) | 200 examples, 5 classes, 20 resamples, 1 seed(s) |" in out
    assert "| DEE curve (test-cv) | 2 members, 200 examples, 5 classes |" in out


def test_time_statistics_refuses_a_bad_size(capsys) -> None:
    with pytest.raises(SystemExit):
        time_statistics.main(["--resamples", "0"])
    assert "--resamples must be at least 1, got 0" in capsys.readouterr().err
