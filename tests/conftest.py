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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test tensors are tiny: on a 2-core machine a second intra-op thread only contends for
    the cores (a 15-step LSTM loop went from 0.4 s to 17 s while another process was busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


TINY_PARAMS = {
    "name": "tiny", "model_name": "Sequence1Modal", "input_size": 35,
    "model_params": {"encoder": {"dim": 8, "layers": 2, "dropout": 0.3, "bidirectional": True},
                     "attention": {"layers": 2, "dropout": 0.3, "activation": "tanh", "context": False}},
    "batch_size": 32, "lr": 0.005, "patience": 30, "epochs": 2, "seed": 7, "num_threads": 1,
}


@pytest.fixture(scope="session")
def tiny_params(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("params") / "tiny.json"
    path.write_text(json.dumps(TINY_PARAMS))
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_synthetic, tiny_params, tmp_path_factory) -> Path:
    """A finished 2-fold run on the tiny synthetic set, with its posteriors."""
    from aus_lib import folds, inference, runs, train
    from aus_lib.config import load_config

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(tiny_params, {"kfolds": 2})
    manifest = folds.load_or_make(root / "folds", 2, aus_dir=tiny_synthetic, seed=7)
    run_dir = runs.prepare_run_dir(root / "runs", "r1", train.run_fingerprint(cfg, manifest))
    train.train_cv(cfg, manifest, run_dir, progress=False)
    runs.set_latest(root / "runs", run_dir)
    inference.extract_posteriors(run_dir, "val", progress=False)
    return run_dir
