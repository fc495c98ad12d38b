"""Tests for aus_lib.train: early stopping, splits, class weights, checkpoints, determinism, resume, run files."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from aus_lib import checkpoints, dataset, fold, runs, schedule, train
from aus_lib.config import load_config
from aus_lib.folds import FoldError, assign_folds, make_folds, split_fold
from aus_lib.model import Sequence1Modal
from aus_lib.ravdess import LABELS

FAST = {"epochs": 3, "kfolds": 2, "batch_size": 32, "model_params.encoder.dim": 8, "device": "cpu",
        "num_threads": 1, "engine": "batched"}




def make_cfg(**overrides):
    return load_config("params/RAVDESS_AUs.json", {**FAST, **overrides})


@pytest.fixture(scope="module")
def clips(tiny_synthetic):
    """(manifest with 2 folds of 2 actors, ClipData) of the 4-actor synthetic set."""
    manifest = dataset.build_manifest(tiny_synthetic, progress=False)
    manifest = assign_folds(manifest, make_folds(manifest["actor"].value_counts().to_dict(), 2, seed=2020))
    return manifest, dataset.load_clips(manifest, cache=False, progress=False)


def run_fold(clips, fold_dir, k=1, **overrides):
    manifest, data = clips
    cfg = make_cfg(**overrides)
    with schedule.torch_settings(cfg):
        return fold.train_fold(cfg, data, k, split_fold(manifest, k, cfg), fold_dir, packed=cfg.engine == "plain")


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds").reset_index(drop=True)


# --- early stopping ------------------------------------------------------------------------------

def feed(stopper: fold.EarlyStopping, f1s) -> tuple[list[bool], int]:
    """Step through scripted F1s like the training loop; (improved flags, epochs run)."""
    flags = []
    for epoch, f1 in enumerate(f1s, start=1):
        if stopper.should_stop:
            break
        flags.append(stopper.step(epoch, f1))
    return flags, len(flags)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    stopper = fold.EarlyStopping(patience=2)
    flags, run = feed(stopper, [0.1, 0.3, 0.2, 0.3, 0.9, 0.95])
    assert flags == [True, True, False, False]
    assert run == 4 and stopper.best_epoch == 2 and stopper.best == 0.3


def test_early_stopping_min_change_requires_a_margin():
    stopper = fold.EarlyStopping(patience=5, min_change=0.05)
    flags, _ = feed(stopper, [0.1, 0.14, 0.16, 0.2])
    assert flags == [True, False, True, False]
    assert stopper.best_epoch == 3


def test_early_stopping_base_must_be_beaten():
    stopper = fold.EarlyStopping(patience=3, base=0.5)
    flags, run = feed(stopper, [0.3, 0.5, 0.4, 0.9])
    assert flags == [False, False, False]
    assert run == 3 and stopper.best_epoch is None


def test_early_stopping_patience_minus_one_never_stops():
    stopper = fold.EarlyStopping(patience=-1)
    flags, run = feed(stopper, [0.5] + [0.1] * 200)
    assert run == 201 and flags.count(True) == 1 and not stopper.should_stop


def test_early_stopping_state_dict_continues_identically():
    f1s = [0.2, 0.1, 0.3, 0.3, 0.25, 0.4, 0.1, 0.1]
    whole = fold.EarlyStopping(patience=3, min_change=0.01)
    expected = feed(whole, f1s)[0]
    first = fold.EarlyStopping(patience=3, min_change=0.01)
    flags = feed(first, f1s[:3])[0]
    second = fold.EarlyStopping(patience=1)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))  # a plain, JSON-able dict
    for epoch, f1 in enumerate(f1s[3:], start=4):
        if second.should_stop:
            break
        flags.append(second.step(epoch, f1))
    assert flags == expected and second.state_dict() == whole.state_dict()


def test_training_loop_keeps_the_scripted_best_epoch_as_checkpoint(clips, tmp_path, monkeypatch):
    """Validation F1 scripted 0.2, 0.5, 0.4, 0.45 with patience 2: stop after epoch 4, keep epoch 2's weights."""
    script = iter([0.2, 0.5, 0.4, 0.45])
    real_evaluate = fold.evaluate
    manifest, _ = clips

    def scripted(model, tensors, index, weights):
        metrics, y_true, y_pred = real_evaluate(model, tensors, index, weights)
        return {**metrics, "f1": next(script, metrics["f1"])}, y_true, y_pred

    saved = {}

    def remember(k, epoch, row):
        saved[epoch] = torch.load(tmp_path / "fold" / "state.pt", weights_only=True)["model"]

    monkeypatch.setattr(fold, "evaluate", scripted)
    cfg = make_cfg(epochs=10, patience=2)
    with schedule.torch_settings(cfg):
        result = fold.train_fold(cfg, clips[1], 1, split_fold(manifest, 1, cfg), tmp_path / "fold",
                                  packed=False, on_epoch_end=remember)
    assert result.history["best"].tolist() == [True, True, False, False]
    assert result.metrics["best_epoch"] == 2 and result.metrics["epochs_run"] == 4
    checkpoint = torch.load(tmp_path / "fold" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert all(torch.equal(checkpoint["model"][key], saved[2][key]) for key in saved[2])
    assert not all(torch.equal(checkpoint["model"][key], saved[4][key]) for key in saved[4])


def test_a_base_no_epoch_beats_keeps_the_last_epoch_with_a_warning(clips, tmp_path):
    with pytest.warns(UserWarning, match="no epoch's validation F1 beat base=1.0"):
        result = run_fold(clips, tmp_path / "fold", epochs=2, base=1.0)
    assert not result.history["best"].any()
    assert torch.load(tmp_path / "fold" / "checkpoint.pt", weights_only=True)["epoch"] == 2


# --- class weights, normalization, splits -----------------------------------------------------------

def test_class_weights_are_balanced_over_present_classes():
    weights = fold.class_weights(np.array([0, 0, 0, 1]), n_classes=3)
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1), 0.0])


def test_class_weights_equalize_each_class_total(clips):
    labels = clips[1].labels
    weights = fold.class_weights(labels).numpy()
    totals = weights * np.bincount(labels, minlength=len(LABELS))
    assert totals == pytest.approx(np.full(len(LABELS), len(labels) / len(LABELS)))


def test_normalization_is_fitted_on_the_training_part_only(clips):
    manifest, data = clips
    split = split_fold(manifest, 1, make_cfg())
    norm = fold.fit_normalization(data, split.train, "standard")
    train_frames = np.concatenate([data.clip(i) for i in split.train])
    all_frames = np.concatenate([data.clip(i) for i in range(len(data))])
    assert norm["mean"].numpy() == pytest.approx(train_frames.mean(0), abs=1e-5)
    assert not np.allclose(norm["mean"].numpy(), all_frames.mean(0), atol=1e-5)


def test_test_fold_selection_validates_on_the_test_fold(clips):
    manifest, _ = clips
    train_idx, val_idx, test_idx = split_fold(manifest, 2, make_cfg(selection="test_fold"))
    assert np.array_equal(val_idx, test_idx)
    assert np.array_equal(test_idx, np.flatnonzero(manifest["fold"] == 2))
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(len(manifest)))


def test_inner_selection_holds_out_whole_training_actors(clips):
    manifest, _ = clips
    cfg = make_cfg(selection="inner", inner_val_actors=1)
    train_idx, val_idx, test_idx = split_fold(manifest, 1, cfg)
    actors = manifest["actor"].to_numpy()
    test_actors = set(actors[manifest["fold"] == 1])
    assert set(actors[test_idx]) == test_actors
    assert set(actors[val_idx]).isdisjoint(test_actors) and set(actors[train_idx]).isdisjoint(test_actors)
    assert set(actors[val_idx]).isdisjoint(actors[train_idx])
    assert len(set(actors[val_idx])) == 1
    assert len(train_idx) + len(val_idx) + len(test_idx) == len(manifest)
    again = split_fold(manifest, 1, cfg)
    assert np.array_equal(again.val, val_idx)


def test_inner_selection_keeps_at_least_one_training_actor(clips):
    manifest, _ = clips
    train_idx, val_idx, _ = split_fold(manifest, 1, make_cfg(selection="inner", inner_val_actors=4))
    assert len(set(manifest["actor"].to_numpy()[train_idx])) == 1
    assert len(set(manifest["actor"].to_numpy()[val_idx])) == 1


def test_split_fold_accepts_clip_data_with_folds(clips):
    manifest, data = clips
    folds = {k: tuple(sorted(g["actor"].unique())) for k, g in manifest.groupby("fold")}
    cfg = make_cfg(selection="inner", inner_val_actors=1)
    assert all(np.array_equal(a, b) for a, b in zip(split_fold(data, 2, cfg, folds=folds),
                                                    split_fold(manifest, 2, cfg)))
    with pytest.raises(FoldError, match="folds="):
        split_fold(data, 2, cfg)


def test_inner_training_sees_the_test_fold_only_in_the_final_evaluation(clips, tmp_path, monkeypatch):
    manifest, _ = clips
    cfg = make_cfg(selection="inner", inner_val_actors=1, epochs=2)
    split = split_fold(manifest, 1, cfg)
    seen = []
    real_evaluate = fold.evaluate

    def recording(model, tensors, index, weights):
        seen.append(np.asarray(index).copy())
        return real_evaluate(model, tensors, index, weights)

    monkeypatch.setattr(fold, "evaluate", recording)
    with schedule.torch_settings(cfg):
        result = fold.train_fold(cfg, clips[1], 1, split, tmp_path / "fold", packed=False)
    assert len(seen) == 3
    assert all(np.array_equal(s, split.val) for s in seen[:2])
    assert np.array_equal(seen[2], split.test)
    assert result.metrics["n"] == len(split.test)
    assert set(result.metrics["test_actors"]).isdisjoint(result.metrics["val_actors"] + result.metrics["train_actors"])


# --- training behaviour ------------------------------------------------------------------------------

def test_training_loss_falls(clips, tmp_path):
    result = run_fold(clips, tmp_path / "fold", epochs=5, lr=0.01, patience=-1)
    losses = result.history["train_loss"].to_numpy()
    assert len(losses) == 5
    assert losses[-1] < losses[0] - 0.05


def test_same_seed_gives_identical_histories_and_weights(clips, tmp_path):
    first = run_fold(clips, tmp_path / "a", epochs=2, deterministic=True)
    second = run_fold(clips, tmp_path / "b", epochs=2, deterministic=True)
    pd.testing.assert_frame_equal(comparable(first.history), comparable(second.history))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_another_seed_gives_another_history(clips, tmp_path):
    first = run_fold(clips, tmp_path / "a", epochs=2)
    second = run_fold(clips, tmp_path / "b", epochs=2, seed=7)
    assert not first.history["train_loss"].equals(second.history["train_loss"])


def test_fold_result_does_not_depend_on_earlier_folds(clips, tmp_path):
    manifest, data = clips
    cfg = make_cfg(epochs=2)
    both = train.train_cv(cfg, manifest, tmp_path / "both", data=data, folds=[1, 2], progress=False)
    torch.manual_seed(12345)
    torch.rand(1000)  # a different global RNG state must not matter either
    alone = train.train_cv(cfg, manifest, tmp_path / "alone", data=data, folds=[2], progress=False)
    pd.testing.assert_frame_equal(comparable(both.histories[2]), comparable(alone.histories[2]))
    assert list(alone.table.index) == [2, "mean", "std"]
    assert not (tmp_path / "alone" / "DONE").exists()  # a partial run is not a finished run


# --- checkpoints ------------------------------------------------------------------------------------

def test_checkpoint_round_trip_gives_identical_logits_and_metrics(clips, tmp_path):
    manifest, data = clips
    result = run_fold(clips, tmp_path / "fold", epochs=2, preprocessor="standard")
    model, checkpoint = checkpoints.load_checkpoint(tmp_path / "fold" / "checkpoint.pt")
    cfg = make_cfg(preprocessor="standard")
    reference = Sequence1Modal(cfg.model_config(), packed=False)
    reference.load_state_dict(torch.load(tmp_path / "fold" / "checkpoint.pt", weights_only=True)["model"])
    reference.eval()
    tensors = fold.fold_tensors(data, checkpoint["normalization"], torch.device("cpu"))
    x, lengths, _ = tensors.batch(np.arange(10))
    with torch.no_grad():
        assert torch.equal(model(x, lengths)[0], reference(x, lengths)[0])
    metrics, _, _ = fold.evaluate(model, tensors, split_fold(manifest, 1, cfg).test,
                                   fold.class_weights(data.labels[split_fold(manifest, 1, cfg).train]))
    assert metrics["accuracy"] == checkpoint["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert checkpoint["labels"] == list(LABELS) and checkpoint["normalization"]["kind"] == "standard"


def test_load_checkpoint_names_mismatching_shapes(clips, tmp_path):
    run_fold(clips, tmp_path / "fold", epochs=1)
    checkpoint = torch.load(tmp_path / "fold" / "checkpoint.pt", weights_only=True)
    checkpoint["params"]["model_params"]["encoder"]["dim"] = 16
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(checkpoints.CheckpointError, match=r"encoder\.weight_ih_l0: checkpoint \(32, 35\) vs model \(64, 35\)"):
        checkpoints.load_checkpoint(tmp_path / "bad.pt")


# --- the run ------------------------------------------------------------------------------------------

def test_train_cv_leaves_torch_settings_allocator_and_environment_as_they_were(clips, tmp_path, monkeypatch):
    manifest, data = clips
    monkeypatch.delenv(schedule.CUBLAS_WORKSPACE, raising=False)
    monkeypatch.setattr(schedule, "fix_mmap_threshold", lambda *a: pytest.fail("process-wide allocator change"))
    threads, environment = torch.get_num_threads(), dict(os.environ)
    train.train_cv(make_cfg(epochs=1, deterministic=True, num_threads=2), manifest, tmp_path / "run", data=data,
                   folds=[1], progress=False)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert dict(os.environ) == environment


def test_train_cv_writes_every_file(clips, tmp_path):
    manifest, data = clips
    result = train.train_cv(make_cfg(epochs=2), manifest, tmp_path / "run", data=data, progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "inputs.csv", "environment.json", "cv_results.csv", "DONE"):
        assert (run / name).is_file(), name
    for k in (1, 2):
        for name in ("checkpoint.pt", "history.csv", "learning_curve.png", "confusion.csv", "confusion.png",
                     "metrics.json", "state.pt", "DONE"):
            assert (run / f"fold_{k}" / name).is_file(), f"fold_{k}/{name}"
        checkpoint = torch.load(run / f"fold_{k}" / "checkpoint.pt", weights_only=True)
        assert {"model", "params", "labels", "fold", "epoch", "metrics", "normalization", "test_actors"} <= set(checkpoint)
        assert checkpoint["test_actors"] == sorted(manifest.loc[manifest["fold"] == k, "actor"].unique().tolist())
        confusion = pd.read_csv(run / f"fold_{k}" / "confusion.csv", index_col=0)
        assert list(confusion.index) == list(LABELS) and list(confusion.columns) == list(LABELS)
        assert confusion.to_numpy().sum() == (manifest["fold"] == k).sum()
        assert list(pd.read_csv(run / f"fold_{k}" / "history.csv").columns) == list(fold.HISTORY_COLUMNS)
    assert json.loads((run / "config.json").read_text()) == make_cfg(epochs=2).to_params()
    assert set(json.loads((run / "environment.json").read_text())) >= {"python", "torch", "numpy", "pandas", "sklearn",
                                                                      "device_name", "threads"}
    assert pd.read_csv(run / "inputs.csv")["fold"].tolist() == manifest["fold"].tolist()
    table = pd.read_csv(run / "cv_results.csv", index_col="fold")
    assert list(table.index) == ["1", "2", "mean", "std"]
    assert table.loc["mean", "accuracy"] == pytest.approx(result.table.loc[[1, 2], "accuracy"].mean())
    assert list(result.table.columns) == ["accuracy", "precision", "recall", "f1", "uar", "loss", "best_epoch",
                                          "epochs_run"]


def test_fold_figures_are_drawn_after_training_and_redrawn_when_an_interruption_left_them_out(clips, tmp_path,
                                                                                            monkeypatch):
    """Folds trained side by side get their figures once all are trained (no plotting beside training); a
    fold finished by a run stopped before that gets them when the run is resumed, its results untouched."""
    manifest, data = clips
    drawn_while_training = []
    real_figures = fold.fold_figures

    def watch(fold_dir, name):
        unfinished = any(not (d / "DONE").is_file() for d in (tmp_path / "run").glob("fold_*"))
        drawn_while_training.append(unfinished or threading.current_thread() is not threading.main_thread())
        real_figures(fold_dir, name)
    for module in (fold, schedule, train):  # wherever a caller looks the function up
        monkeypatch.setattr(module, "fold_figures", watch)
    train.train_cv(make_cfg(epochs=1, num_threads=2), manifest, tmp_path / "run", data=data, progress=False)
    assert drawn_while_training == [False, False]
    fold_dir = tmp_path / "run" / "fold_1"
    for name in ("learning_curve.png", "confusion.png"):
        (fold_dir / name).unlink()
    checkpoint = (fold_dir / "checkpoint.pt").stat().st_mtime_ns
    train.train_cv(make_cfg(epochs=1, num_threads=2), manifest, tmp_path / "run", data=data, progress=False)
    assert (fold_dir / "learning_curve.png").is_file() and (fold_dir / "confusion.png").is_file()
    assert (fold_dir / "checkpoint.pt").stat().st_mtime_ns == checkpoint


def test_a_run_from_before_micro_batch_is_told_how_to_continue(clips, tmp_path):
    """Its config.json lacks the key (it trained whole batches): the refusal names the setting that continues it,
    and with that setting it resumes."""
    manifest, data = clips
    cfg = make_cfg(epochs=1).replace(micro_batch=None)
    train.train_cv(cfg, manifest, tmp_path / "run", data=data, folds=[1], progress=False)
    config_file = tmp_path / "run" / "config.json"
    old = json.loads(config_file.read_text())
    del old["micro_batch"]
    config_file.write_text(json.dumps(old))
    with pytest.raises(fold.TrainError, match='predates micro_batch.*"micro_batch": null in the params file'):
        train.train_cv(make_cfg(epochs=1), manifest, tmp_path / "run", data=data, folds=[1], progress=False)
    train.train_cv(cfg, manifest, tmp_path / "run", data=data, folds=[1], progress=False)
    runs.prepare_run_dir(tmp_path, "cli", {"lr": 0.001})  # a CLI run folder from before the key existed
    with pytest.raises(runs.RunExistsError, match='"micro_batch": null'):
        runs.prepare_run_dir(tmp_path, "cli", {"lr": 0.001, "micro_batch": "auto"}, resume=True)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_uninterrupted_history(clips, tmp_path):
    manifest, data = clips
    cfg = make_cfg(epochs=3, patience=-1)
    whole = train.train_cv(cfg, manifest, tmp_path / "whole", data=data, folds=[1], progress=False)

    def stop_after_first_epoch(k, epoch, row):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.train_cv(cfg, manifest, tmp_path / "cut", data=data, folds=[1], progress=False,
                       on_epoch_end=stop_after_first_epoch)
    assert not (tmp_path / "cut" / "fold_1" / "DONE").exists()
    epochs_after_resume = []
    resumed = train.train_cv(cfg, manifest, tmp_path / "cut", data=data, folds=[1], progress=False,
                             on_epoch_end=lambda k, epoch, row: epochs_after_resume.append(epoch))
    assert epochs_after_resume == [2, 3]
    pd.testing.assert_frame_equal(comparable(whole.histories[1]), comparable(resumed.histories[1]))
    a = torch.load(tmp_path / "whole" / "fold_1" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "fold_1" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_skips_finished_folds(clips, tmp_path):
    manifest, data = clips
    cfg = make_cfg(epochs=1)
    first = train.train_cv(cfg, manifest, tmp_path / "run", data=data, progress=False)
    calls = []
    moved = make_cfg(epochs=1, device="auto", num_threads=2)  # where a run executes may change on resume
    again = train.train_cv(moved, manifest, tmp_path / "run", data=data, progress=False,
                           on_epoch_end=lambda *args: calls.append(args))
    assert calls == []
    pd.testing.assert_frame_equal(first.table, again.table)


def test_resume_refuses_a_run_with_other_settings(clips, tmp_path):
    manifest, data = clips
    train.train_cv(make_cfg(epochs=1), manifest, tmp_path / "run", data=data, folds=[1], progress=False)
    with pytest.raises(fold.TrainError, match="lr"):
        train.train_cv(make_cfg(epochs=1, lr=0.5), manifest, tmp_path / "run", data=data, folds=[1], progress=False)


def test_run_fingerprint_guards_prepare_run_dir(clips, tmp_path):
    manifest, _ = clips
    cfg = make_cfg()
    fingerprint = train.run_fingerprint(cfg, manifest)
    assert fingerprint["folds"] == {"1": sorted(manifest.loc[manifest["fold"] == 1, "actor"].unique().tolist()),
                                    "2": sorted(manifest.loc[manifest["fold"] == 2, "actor"].unique().tolist())}
    run_dir = runs.prepare_run_dir(tmp_path, "run", fingerprint)
    same = runs.prepare_run_dir(tmp_path, "run", train.run_fingerprint(make_cfg(device="auto"), manifest), resume=True)
    assert same == run_dir
    with pytest.raises(runs.RunExistsError, match="lr"):
        runs.prepare_run_dir(tmp_path, "run", train.run_fingerprint(make_cfg(lr=0.5), manifest), resume=True)
    refolded = manifest.assign(fold=3 - manifest["fold"])
    with pytest.raises(runs.RunExistsError, match="clips, folds"):
        runs.prepare_run_dir(tmp_path, "run", train.run_fingerprint(cfg, refolded), resume=True)


def test_train_cv_refuses_data_in_another_order(clips, tmp_path):
    manifest, data = clips
    with pytest.raises(fold.TrainError, match="does not match the manifest"):
        train.train_cv(make_cfg(epochs=1), manifest, tmp_path / "run", data=data.subset(np.arange(10)),
                       progress=False)


# --- device -------------------------------------------------------------------------------------------

def test_resolve_device(monkeypatch):
    assert fold.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fold.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(fold.TrainError, match="CUDA is not available"):
        fold.resolve_device("cuda:0")
