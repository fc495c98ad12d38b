import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from aus_lib import paths  # noqa: E402

REAL_RAVDESS = paths.SHARED_DATA / "ravdess_real"
REAL_OPENFACE = paths.SHARED_DATA / "openface"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never let a test write the tensor cache into the repository."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    import aus_lib.dataset as dataset

    monkeypatch.setattr(dataset, "CACHE_DIR", tmp_path / "cache")


@pytest.fixture(scope="session")
def real_ravdess() -> Path:
    if not REAL_RAVDESS.is_dir():
        pytest.skip(f"{REAL_RAVDESS} is absent")
    return REAL_RAVDESS


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic set: actors 1-4, written once per test session."""
    from aus_lib import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, seed=2020, actors=[1, 2, 3, 4])
    return out
