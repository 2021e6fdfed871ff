"""Shared fixtures. Tests that need ../shared/data skip with the reason when it is absent — except
under CI (``CI=true``, where ../shared is always present): there a missing collection fails the
test, so CI cannot go green by skipping."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_data(reason: str):
    """Skip (a developer machine without ../shared/data) or, under CI, fail."""
    if under_ci():
        pytest.fail(f"CI=true but {reason}: CI must reach ../shared/data", pytrace=False)
    pytest.skip(reason)


def shared_dataset(name: str):
    """``(spec, BeirFolder)`` of a ../shared/data collection, or skip the test saying why (fail under CI)."""
    from rankdistill.data.datasets import DatasetUnavailable, resolve

    try:
        return resolve(name)
    except DatasetUnavailable as exc:
        missing_data(f"needs the shared data collection '{name}': {exc}")


@pytest.fixture
def demo():
    """The demo slice of SciFact (read in place from ../shared/data), or skip saying why."""
    return shared_dataset("demo")[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A test that reaches a dataset missing on this machine (e.g. a job on ``demo`` in a fresh clone
    without ../shared/data) is skipped with the reason, not failed; under CI it fails."""
    from rankdistill.data.datasets import DatasetUnavailable

    outcome = yield
    error = outcome.excinfo[1] if outcome.excinfo else None
    if isinstance(error, DatasetUnavailable) and not under_ci():
        outcome.force_exception(pytest.skip.Exception(f"needs a shared data collection: {error}", _use_item_location=True))


@pytest.fixture(autouse=True)
def rankdistill_home(tmp_path_factory, monkeypatch):
    """Each test's own embedded MLflow home (never the user's ~/.rankdistill)."""
    home = tmp_path_factory.mktemp("rankdistill-home")
    monkeypatch.setenv("RANKDISTILL_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance on 127.0.0.1 for the module; shut down afterwards."""
    from rankdistill.ray_runtime import RayConfig, init_ray, shutdown_ray

    started = init_ray(RayConfig(num_cpus=2))
    yield
    shutdown_ray(started)


@pytest.fixture(scope="session", autouse=True)
def no_stray_mlflow_store():
    """No test may leave MLflow's own default store (``./mlflow.db``, ``./mlruns``) in the working
    directory: every MLflow call goes through the platform's tracking URI."""
    from pathlib import Path

    strays = [Path("mlflow.db"), Path("mlruns")]
    before = {p for p in strays if p.exists()}
    yield
    after = {p for p in strays if p.exists()} - before
    assert not after, f"a test created MLflow's default store in {os.getcwd()}: {sorted(map(str, after))}"
