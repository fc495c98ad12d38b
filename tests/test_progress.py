"""Training progress in batch kernels: plain lines that a log shows, and an interrupt that stays an interrupt."""
import io

import pytest

from aus_lib import progress


def test_plain_progress_lines_carry_fold_epoch_f1_best_elapsed_and_eta():
    out = io.StringIO()
    bar = progress.PlainProgress(total=10, desc="paper 5-fold CV", interval=0.0, file=out)
    bar.update(4)  # epochs of a finished fold read back from disk
    bar.update(1)
    bar.set_postfix({"fold": 2, "epoch": 1, "val_f1": "0.412", "best_epoch": 1})
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("paper 5-fold CV: 5/10 epochs (50 %)")
    assert "fold 2 epoch 1 val F1 0.412 best epoch 1" in line and "elapsed 0:00:00 ETA" in line


def test_plain_progress_prints_at_most_once_per_interval():
    out = io.StringIO()
    bar = progress.PlainProgress(total=100, desc="cv", interval=3600.0, file=out)
    for epoch in range(1, 51):
        bar.update(1)
        bar.set_postfix({"fold": 1, "epoch": epoch, "val_f1": "0.5", "best_epoch": 1})
    assert len(out.getvalue().splitlines()) == 1


def test_an_interrupted_run_is_reported_stopped_not_done():
    out = io.StringIO()
    bar = progress.PlainProgress(total=10, desc="cv", file=out)
    bar.update(3)
    bar.close()
    assert "stopped at 3/10 epochs" in out.getvalue() and "done" not in out.getvalue()


def test_batch_detection_can_be_forced_and_is_off_outside_a_kernel(monkeypatch):
    monkeypatch.setenv(progress.ENV, "plain")
    assert progress.in_batch_kernel()
    assert isinstance(progress.training_bar(5, "cv"), progress.PlainProgress)
    monkeypatch.delenv(progress.ENV)
    assert not progress.in_batch_kernel()  # pytest runs no ipykernel


def test_sigint_during_training_leaves_the_run_unfinished(tiny_synthetic, tiny_params, tmp_path):
    from aus_lib import dataset, runs, train
    from aus_lib.config import load_config

    manifest = dataset.build_manifest(tiny_synthetic, progress=False)
    cfg = load_config(tiny_params, {"kfolds": 2, "epochs": 3})

    def interrupt(k, epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_cv(cfg, manifest, tmp_path / "run", progress=False, on_epoch_end=interrupt)
    assert not runs.is_done(tmp_path / "run")
    assert not any(runs.is_done(tmp_path / "run" / f"fold_{k}") for k in (1, 2))
