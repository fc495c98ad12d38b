"""The honest protocol: per-actor normalization, inner validation sized from the data, the refit
completion, MiniRocket, and proof that nothing before the final evaluation reads a test fold."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from aus_lib import baselines, checkpoints, dataset, inference, normalize, runs, train
from aus_lib.config import ConfigError, load_config
from aus_lib.folds import assign_folds, inner_val_count, split_fold
from aus_lib.model import ModelConfig, Sequence1Modal
from aus_lib.paths import SHARED_DATA

FAST = {"epochs": 3, "kfolds": 2, "batch_size": 32, "model_params.encoder.dim": 8, "device": "cpu",
        "num_threads": 1, "engine": "batched"}
FOLDS = {1: (1, 2), 2: (3, 4)}


@pytest.fixture(scope="module")
def clips(tiny_synthetic):
    manifest = assign_folds(dataset.build_manifest(tiny_synthetic, progress=False), FOLDS)
    return manifest, dataset.load_clips(manifest, cache=False, progress=False)


def honest_cfg(**overrides):
    return load_config("params/RAVDESS_AUs_honest.json", {**FAST, **overrides})


# --- per-actor normalization ------------------------------------------------------------------------

def test_zscore_gives_each_actor_zero_mean_unit_std_per_column(clips):
    _, data = clips
    normed = normalize.normalize_data(data, "zscore")
    for actor in np.unique(data.actors):
        frames = np.concatenate([normed.clip(i) for i in np.flatnonzero(normed.actors == actor)])
        varying = np.concatenate([data.clip(i) for i in np.flatnonzero(data.actors == actor)]).std(0) > 1e-6
        assert np.allclose(frames.mean(0), 0, atol=1e-4)
        assert np.allclose(frames.std(0)[varying], 1, atol=1e-3)
    assert np.all(normed.features[np.arange(data.features.shape[1])[None, :] >= data.lengths[:, None]] == 0)


def test_an_actors_statistics_use_only_its_own_clips_and_no_labels(clips):
    _, data = clips
    other = dataset.ClipData(list(data.names), data.features.copy(), data.lengths, data.labels[::-1].copy(),
                             data.actors)
    actor3 = data.actors == 3
    other.features[actor3] = other.features[actor3] * 7 + 3  # another actor's frames change wildly
    before = normalize.normalize_data(data, "robust")
    after = normalize.normalize_data(other, "robust")
    untouched = data.actors != 3
    np.testing.assert_array_equal(before.features[untouched], after.features[untouched])


def test_unknown_kind_and_unknown_actor_are_refused(clips):
    _, data = clips
    with pytest.raises(normalize.NormalizationError, match="actor_normalization='minmax'"):
        normalize.normalize_data(data, "minmax")
    stats = normalize.statistics_of(data.subset(np.flatnonzero(data.actors == 1)), "zscore")
    with pytest.raises(normalize.NormalizationError, match=r"actor\(s\) \[2, 3, 4\]"):
        normalize.normalize_data(data, "zscore", stats)


def test_a_lone_clip_of_an_unknown_actor_uses_its_own_statistics_with_a_warning():
    rng = np.random.default_rng(0)
    clips = {"a": rng.normal(3, 2, (50, 4)), "b": rng.normal(0, 1, (40, 4)), "c": rng.normal(5, 1, (40, 4))}
    with pytest.warns(UserWarning, match="1 clip"):
        out = normalize.normalize_clips(clips, {"a": None, "b": 7, "c": 7}, "zscore")
    assert np.allclose(out["a"].mean(0), 0, atol=1e-5)
    both = np.concatenate([out["b"], out["c"]])
    assert np.allclose(both.mean(0), 0, atol=1e-5) and not np.allclose(out["b"].mean(0), 0, atol=0.5)


def test_static_table_normalization_is_per_actor():
    table = pd.DataFrame({"x": [1.0, 3.0, 10.0, 30.0], "y": [5.0, 5.0, 1.0, 2.0]})
    out = normalize.normalize_table(table, ["x", "y"], [1, 1, 2, 2], "zscore")
    np.testing.assert_allclose(out["x"], [-1, 1, -1, 1])
    np.testing.assert_allclose(out["y"], [0, 0, -1, 1])  # constant for actor 1: centred, not divided by 0


@pytest.mark.skipif(not (SHARED_DATA / "ravdess_averages").is_dir(), reason="real averages absent")
def test_actor_zscore_lifts_the_svc_on_the_real_24_actor_averages():
    table = SHARED_DATA / "ravdess_averages" / "df_average_AUs_total.csv"
    plain = baselines.static_cv(table, "svc", 1, "minmax")
    normed = baselines.static_cv(table, "svc", 1, "minmax", actor_normalization="zscore")
    assert round(100 * plain.loc["mean", "accuracy"], 2) == 59.93  # the paper's Table 2
    assert normed.loc["mean", "accuracy"] >= 0.70
    assert normed.attrs["baseline"]["actor_normalization"] == "zscore"


# --- inner validation sized from the data -----------------------------------------------------------

@pytest.mark.parametrize("n_train, expected", [(1, 0), (2, 1), (4, 1), (19, 4), (23, 5)])
def test_auto_inner_validation_holds_out_a_fifth_of_the_training_actors(n_train, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert inner_val_count(n_train, "auto") == expected


def test_few_remaining_training_actors_warn():
    with pytest.warns(UserWarning, match="leaving 1 to train on"):
        inner_val_count(2, "auto", k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert inner_val_count(4, "auto") == 1  # 5 actors, one per fold: 3 remain, no warning
        assert inner_val_count(19, 4) == 4


def test_a_single_training_actor_gives_a_stratified_clip_level_inner_split(clips):
    manifest, _ = clips
    loao = assign_folds(manifest.drop(columns="fold").query("actor in (1, 2)").reset_index(drop=True),
                        {1: (1,), 2: (2,)})
    with pytest.warns(UserWarning, match="only one training actor"):
        split = split_fold(loao, 1, honest_cfg())
    assert set(loao["actor"][split.train]) == set(loao["actor"][split.val]) == {2}
    assert set(loao["actor"][split.test]) == {1}
    per_emotion = loao.iloc[split.val]["emotion"].value_counts()
    assert set(per_emotion.index) == set(loao["emotion"]) and np.intersect1d(split.train, split.val).size == 0


def test_config_keys_of_the_honest_protocol_are_validated(tmp_path):
    assert honest_cfg().inner_val_actors == "auto"
    with pytest.raises(ConfigError, match="final_fit.*selection"):
        load_config("params/RAVDESS_AUs.json", {"final_fit": "refit"})
    with pytest.raises(ConfigError, match="inner_val_actors"):
        load_config("params/RAVDESS_AUs.json", {"inner_val_actors": "some"})
    with pytest.raises(ConfigError, match="actor_normalization"):
        load_config("params/RAVDESS_AUs.json", {"actor_normalization": "speaker"})
    paper = load_config("params/RAVDESS_AUs.json")
    assert paper.actor_normalization is None and paper.selection == "test_fold" and paper.final_fit == "inner"


# --- the model's input statistics ---------------------------------------------------------------------

def test_input_statistics_ignore_padding_and_feed_the_classifier():
    torch.manual_seed(0)
    model = Sequence1Modal(ModelConfig(encoder_dim=6, attention_input_stats=True), packed=False).eval()
    x = torch.randn(2, 12, 35)
    lengths = torch.tensor([12, 7])
    padded = x.clone()
    padded[1, 7:] = 100.0  # whatever lies beyond a clip's end must not matter
    with torch.no_grad():
        a, _ = model(x, lengths)
        b, _ = model(padded, lengths)
    torch.testing.assert_close(a, b)
    assert model.classifier.in_features == 12 + 70


# --- refit, and no peeking ------------------------------------------------------------------------------

def corrupted_test_fold(data: dataset.ClipData, test_actors) -> dataset.ClipData:
    """Labels and frames of the test actors scrambled: what no selection step may look at."""
    test = np.isin(data.actors, test_actors)
    labels = data.labels.copy()
    labels[test] = (labels[test] + 3) % 8
    features = data.features.copy()
    features[test] = features[test][::-1] * 2 + 1
    return dataset.ClipData(list(data.names), features, data.lengths, labels, data.actors)


def test_refit_retrains_each_fold_for_the_epochs_the_inner_split_chose(clips, tmp_path):
    manifest, data = clips
    cfg = honest_cfg(epochs=4, final_fit="refit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train.train_cv(cfg, manifest, tmp_path / "run", data=data, progress=False)
    for k in (1, 2):
        inner = json.loads((tmp_path / "run" / f"fold_{k}" / "inner" / "metrics.json").read_text())
        final = json.loads((tmp_path / "run" / f"fold_{k}" / "metrics.json").read_text())
        assert final["final_fit"] == "refit" and inner["final_fit"] == "inner"
        assert final["epochs_run"] == final["best_epoch"] == inner["best_epoch"] == final["inner_best_epoch"]
        assert sorted(final["train_actors"]) == sorted(inner["train_actors"] + inner["val_actors"])
        assert final["val_actors"] == [] and final["test_actors"] == list(FOLDS[k])
        assert len(pd.read_csv(tmp_path / "run" / f"fold_{k}" / "history.csv")) == final["best_epoch"]
    assert runs.is_done(tmp_path / "run")
    assert (tmp_path / "run" / normalize.ACTOR_STATS_FILE).is_file()
    assert list(result.table.index[:2]) == [1, 2]


@pytest.mark.parametrize("final_fit", ["inner", "refit", "ensemble"])
def test_selection_is_unchanged_when_the_test_fold_is_corrupted(clips, tmp_path, final_fit):
    """Every model a fold trains (the inner-selected one, the refit and its inner run, each ensemble member)
    chooses the same epoch and ends with the same weights when the test actors' labels and frames are scrambled."""
    manifest, data = clips
    cfg = honest_cfg(epochs=4, final_fit=final_fit, ensemble_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_cv(cfg, manifest, tmp_path / "clean", data=data, progress=False, folds=[1])
        train.train_cv(cfg, manifest, tmp_path / "corrupt", data=corrupted_test_fold(data, FOLDS[1]),
                       progress=False, folds=[1])
    fold_dir = tmp_path / "clean" / "fold_1"
    models = sorted(path.relative_to(tmp_path / "clean") for path in fold_dir.rglob("checkpoint.pt")
                    if "model" in torch.load(path, weights_only=True))
    assert len(models) == {"inner": 1, "refit": 2, "ensemble": 2}[final_fit]
    for path in models:
        clean = torch.load(tmp_path / "clean" / path, weights_only=True)
        corrupt = torch.load(tmp_path / "corrupt" / path, weights_only=True)
        assert clean["epoch"] == corrupt["epoch"], path
        for name, weights in clean["model"].items():
            torch.testing.assert_close(weights, corrupt["model"][name], rtol=0, atol=0, msg=f"{path}: {name}")
        history = [pd.read_csv(tmp_path / run / path.parent / "history.csv").drop(columns="seconds")
                   for run in ("clean", "corrupt")]
        pd.testing.assert_frame_equal(*history)


def test_inference_sees_the_inputs_training_saw(clips, tmp_path):
    manifest, data = clips
    cfg = honest_cfg(epochs=2, final_fit="inner", actor_normalization="robust")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_cv(cfg, manifest, tmp_path / "run", data=data, progress=False)
    long = inference.extract_posteriors(tmp_path / "run", "val", progress=False)
    for k in (1, 2):
        metrics = json.loads((tmp_path / "run" / f"fold_{k}" / "metrics.json").read_text())
        of_k = long[long["fold"] == k]
        assert (of_k["label"] == of_k["prediction"]).mean() == pytest.approx(metrics["accuracy"])


# --- MiniRocket ----------------------------------------------------------------------------------------------

def test_resampling_keeps_a_clips_course_at_any_length():
    ramp = np.linspace(0, 1, 37, dtype=np.float32)[:, None].repeat(35, axis=1)
    flat = np.full((90, 35), 2.0, dtype=np.float32)
    features = np.zeros((2, 90, 35), dtype=np.float32)
    features[0, :37], features[1] = ramp, flat
    data = dataset.ClipData(["a", "b"], features, np.array([37, 90]), np.array([0, 1]), np.array([1, 2]))
    out = baselines.resample_clips(data, 50)
    np.testing.assert_allclose(out[0, 0], np.linspace(0, 1, 50), atol=1e-6)
    np.testing.assert_allclose(out[1], 2.0)


def test_minirocket_predicts_every_clip_once_on_variable_length_clips(clips):
    _, data = clips
    assert len(set(data.lengths.tolist())) > 1
    long = baselines.minirocket_cv_predictions(data, FOLDS, "zscore", n_kernels=84)
    assert sorted(long["clip"]) == sorted(data.names)
    assert set(long.groupby("fold")["actor"].unique().map(tuple)) == {(1, 2), (3, 4)}
    assert baselines.summarize_predictions(long).loc["mean", "accuracy"] > 1 / 8


# --- the command line ------------------------------------------------------------------------------------------

def test_baselines_command_prints_and_writes_the_table_side_by_side(tiny_synthetic, tmp_path, capsys):
    from aus_lib.cli import main

    folds_dir = tmp_path / "folds"
    assert main(["make-folds", "--aus-dir", str(tiny_synthetic), "--kfolds", "2", "--out-dir", str(folds_dir)]) == 0
    assert main(["baselines", "--folds-dir", str(folds_dir), "--actor-normalization", "zscore",
                 "--no-minirocket"]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(folds_dir / "baselines_zscore.csv", index_col=0)
    assert "SVC (C=1), averaged AUs, min-max" in table.index
    assert "SVC (C=1), averaged AUs, min-max, actor z-score" in table.index
    assert len(table) == 8 and table["n"].eq(240).all()
    assert "actor z-score" in out and str(folds_dir / "baselines_zscore.csv") in out


def test_an_ensemble_fold_averages_its_members_posteriors(clips, tmp_path):
    manifest, data = clips
    cfg = honest_cfg(epochs=1, final_fit="ensemble", ensemble_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_cv(cfg, manifest, tmp_path / "run", data=data, progress=False)
        long = inference.extract_posteriors(tmp_path / "run", "val", progress=False)
    for k in (1, 2):
        fold_dir = tmp_path / "run" / f"fold_{k}"
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        members = [torch.load(fold_dir / f"member_{m}" / "checkpoint.pt", weights_only=True) for m in range(3)]
        assert metrics["final_fit"] == "ensemble" and metrics["members"] == 3
        assert [c["params"]["seed"] for c in members] == [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        assert all(c["test_actors"] == list(FOLDS[k]) for c in members)
        of_k = long[long["fold"] == k]
        assert (of_k["label"] == of_k["prediction"]).mean() == pytest.approx(metrics["accuracy"])
        probabilities = of_k[[c for c in of_k.columns if c.startswith("p_")]].to_numpy()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        with pytest.raises(checkpoints.CheckpointError, match="ensemble of 3"):
            checkpoints.load_checkpoint(fold_dir / "checkpoint.pt")


def test_ensemble_member_zero_is_the_single_model_run(clips, tmp_path):
    manifest, data = clips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_cv(honest_cfg(epochs=2, final_fit="inner"), manifest, tmp_path / "one", data=data,
                       progress=False, folds=[1])
        train.train_cv(honest_cfg(epochs=2, final_fit="ensemble", ensemble_size=2), manifest, tmp_path / "ens",
                       data=data, progress=False, folds=[1])
    single = torch.load(tmp_path / "one" / "fold_1" / "checkpoint.pt", weights_only=True)["model"]
    member = torch.load(tmp_path / "ens" / "fold_1" / "member_0" / "checkpoint.pt", weights_only=True)["model"]
    for name, weights in single.items():
        torch.testing.assert_close(weights, member[name], rtol=0, atol=0)


def test_an_ensemble_run_scores_new_clips_with_every_member(clips, tmp_path):
    manifest, data = clips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_cv(honest_cfg(epochs=1, final_fit="ensemble", ensemble_size=2), manifest, tmp_path / "run",
                       data=data, progress=False)
        scores = inference.predict_clips(tmp_path / "run", list(manifest["path"][:3]))
    probabilities = scores.table[[c for c in scores.table.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    assert list(scores.table["folds_agreeing"].str.endswith("/2")) == [True] * 3


def test_a_damaged_or_foreign_actor_statistics_file_is_named(clips, tmp_path):
    """Inference rebuilds the run's inputs from its saved statistics: a file that is not JSON, not a record of
    statistics, or of another AU set is refused naming the file."""
    manifest, data = clips
    stats = normalize.statistics_of(data, "zscore")
    stats_file = tmp_path / normalize.ACTOR_STATS_FILE
    params = {"actor_normalization": "zscore"}
    stats_file.write_text(json.dumps(normalize.statistics_to_json(stats, "zscore", data.columns)))
    assert np.allclose(inference.actor_normalized(tmp_path, params, data).features,
                       normalize.normalize_data(data, "zscore", stats).features)
    for text in ("{not json", json.dumps({"kind": "zscore"})):
        stats_file.write_text(text)
        with pytest.raises(normalize.NormalizationError, match=normalize.ACTOR_STATS_FILE):
            inference.actor_normalized(tmp_path, params, data)
    stats_file.write_text(json.dumps(normalize.statistics_to_json(stats, "zscore", [f"x{i}" for i in data.columns])))
    with pytest.raises(ValueError, match="not the AU set the run was trained on"):
        inference.actor_normalized(tmp_path, params, data)
