"""A training process killed with SIGKILL mid-fold resumes to exactly the result of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow


def train_command(params, folds_dir, out_dir, *extra):
    return [sys.executable, "-m", "aus_lib.cli", "train", str(params), "--kfolds", "2", "--folds-dir", str(folds_dir),
            "--out-dir", str(out_dir), "--run-name", "r", "--epochs", "6", *extra]


@pytest.fixture
def longer_params(tmp_path):
    from conftest import TINY_PARAMS

    params = json.loads(json.dumps(TINY_PARAMS))
    params["epochs"] = 6
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return path


def test_sigkill_mid_fold_then_resume_equals_an_uninterrupted_run(tiny_synthetic, longer_params, tmp_path):
    from aus_lib.cli import main

    folds_dir = tmp_path / "folds"
    assert main(["make-folds", "--aus-dir", str(tiny_synthetic), "--kfolds", "2", "--out-dir", str(folds_dir)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # the uninterrupted reference
    subprocess.run(train_command(longer_params, folds_dir, tmp_path / "reference"), check=True, env=env,
                   capture_output=True)

    # a run killed as soon as the first epoch of fold 1 is saved
    proc = subprocess.Popen(train_command(longer_params, folds_dir, tmp_path / "killed"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "r" / "fold_1" / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = tmp_path / "killed" / "r"
    assert not (run / "DONE").exists(), "the process finished before it could be killed"
    assert not (run / "fold_2" / "DONE").exists()
    # a temp file may be left by the kill, but never a truncated final file: every final file loads
    for ckpt in run.rglob("state.pt"):
        torch.load(ckpt, weights_only=True)

    # resume
    subprocess.run(train_command(longer_params, folds_dir, tmp_path / "killed", "--resume"), check=True, env=env,
                   capture_output=True)
    ref = tmp_path / "reference" / "r"
    pd.testing.assert_frame_equal(pd.read_csv(run / "cv_results.csv"), pd.read_csv(ref / "cv_results.csv"))
    for k in (1, 2):
        a = pd.read_csv(run / f"fold_{k}" / "history.csv").drop(columns="seconds")
        b = pd.read_csv(ref / f"fold_{k}" / "history.csv").drop(columns="seconds")
        pd.testing.assert_frame_equal(a, b)
        wa = torch.load(run / f"fold_{k}" / "checkpoint.pt", weights_only=True)["model"]
        wb = torch.load(ref / f"fold_{k}" / "checkpoint.pt", weights_only=True)["model"]
        assert all(torch.equal(wa[name], wb[name]) for name in wb)
    assert (run / "DONE").exists()
    assert not list(run.rglob(".*.tmp*")), "temporary files of the killed process were left behind"
