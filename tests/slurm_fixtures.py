"""pytest plugin: a real single-node SLURM cluster for tests marked ``slurm``.

Enable it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.slurm_fixtures"]``.
The session-scoped fixture ``slurm_cluster`` starts the cluster once, puts ``SLURM_CONF`` into
``os.environ`` for the session and stops the daemons at the end. Where it cannot, the tests skip,
printing why: binaries missing (with the command that installs them; a test installs nothing), or
not root. ``private_slurm`` starts further clusters for one test (say, one without
``EnforcePartLimits``), each in its own state folder, stopped and removed when the test ends.
``PLURES_SLURM_DIR`` overrides where its state lives (default: a fresh ``/tmp/plures-slurm-*``,
removed at the end; pytest's own temporary directories are mode 0700, which munged refuses).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmark.tools import slurm_local


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs a real local SLURM cluster (fixture slurm_cluster; skipped when unavailable)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[slurm_local.SlurmCluster]:
    """A running :class:`benchmark.tools.slurm_local.SlurmCluster`, with ``SLURM_CONF`` set for the session."""
    missing = slurm_local.missing_binaries()
    if missing:  # say what to install; never install from a test
        reason = f"needs SLURM ({', '.join(missing)} not found): {slurm_local.install_command()} (CI installs it)"
        print(reason)
        pytest.skip(reason)
    override = os.environ.get("PLURES_SLURM_DIR")
    # not under pytest's basetemp: munged wants every parent of its socket searchable by all
    state_dir = Path(override) if override else Path(tempfile.mkdtemp(prefix="plures-slurm-"))
    t0 = time.monotonic()
    try:
        cluster = slurm_local.start(state_dir)
    except slurm_local.SlurmUnavailable as e:
        print(f"real SLURM unavailable: {e.reason}")
        pytest.skip(f"real SLURM unavailable: {e.reason}")
    print(f"slurm cluster started in {time.monotonic() - t0:.2f}s under {cluster.state_dir}")
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        slurm_local.stop(cluster)
        if not override:
            shutil.rmtree(state_dir, ignore_errors=True)


def _skip_unless_slurm() -> None:
    missing = slurm_local.missing_binaries()
    if missing:
        pytest.skip(f"needs SLURM ({', '.join(missing)} not found): {slurm_local.install_command()} (CI installs it)")


@pytest.fixture
def private_slurm() -> Iterator[Callable[..., slurm_local.SlurmCluster]]:
    """``private_slurm(**start_options)``: a cluster of this test's own (``slurm_local.start``'s
    options, e.g. ``enforce_part_limits="NO"``; ``state_dir=`` to restart one in the same folder).
    The caller points clients at it (``monkeypatch.setenv("SLURM_CONF", ...)``); every cluster
    started here is stopped, and its folder removed, when the test ends."""
    _skip_unless_slurm()
    dirs: list[Path] = []

    def start(state_dir: Path | None = None, **options: object) -> slurm_local.SlurmCluster:
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="plures-slurm-"))
        if state_dir not in dirs:
            dirs.append(state_dir)
        try:
            return slurm_local.start(state_dir, **options)
        except slurm_local.SlurmUnavailable as e:
            pytest.skip(f"real SLURM unavailable: {e.reason}")

    yield start
    for d in dirs:
        slurm_local.stop(d)
        shutil.rmtree(d, ignore_errors=True)
