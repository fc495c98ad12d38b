"""Scoring your own AU files with a run's fold models (`aus-emotion predict`, 04's last section)."""
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from aus_lib import cli, dataset, inference, openface, posteriors, report
from aus_lib.ravdess import EMOTIONS, LABELS
from aus_lib.checkpoints import load_checkpoint

from conftest import REAL_OPENFACE


def _clips(tiny_synthetic, actor: int, n: int) -> list:
    return sorted(tiny_synthetic.glob(f"*-{actor:02d}.csv"))[:n]


def test_posteriors_are_the_fold_models_softmax_averaged(tiny_run, tiny_synthetic):
    paths = _clips(tiny_synthetic, 3, 2)
    scores = inference.predict_clips(tiny_run, paths)
    manifest = pd.DataFrame({"path": [str(p) for p in paths], "clip": [p.stem for p in paths],
                             "emotion": "neutral", "actor": 3})
    data = dataset.load_clips(manifest, cache=False, progress=False)
    expected = []
    for k in (1, 2):
        model, ckpt = load_checkpoint(tiny_run / f"fold_{k}" / "checkpoint.pt")
        expected.append(posteriors.softmax(inference.predict(model, data, normalization=ckpt.get("normalization")).logits))
    mean = np.mean(expected, axis=0)
    table = scores.table
    assert list(table.columns[-8:]) == [f"p_{e}" for e in EMOTIONS]
    np.testing.assert_allclose(table[[f"p_{e}" for e in LABELS]].to_numpy(), mean, rtol=1e-6)
    assert list(table["predicted"]) == [LABELS[i] for i in mean.argmax(axis=1)]
    for name, length in zip(table["clip"], table["frames"]):
        assert scores.attention[name].shape == (length,) and abs(scores.attention[name].sum() - 1) < 1e-4
    assert set(table["statistics"]) == {"none (the run uses no actor normalization)"}


def test_cli_prints_and_writes_the_table_and_one_heatmap_per_clip(tiny_run, tiny_synthetic, tmp_path, capsys):
    clip = _clips(tiny_synthetic, 4, 1)[0]
    out = tmp_path / "pred"
    assert cli.main(["predict", str(tiny_run), str(clip), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p_happy" in printed and clip.stem in printed and "2 fold models" in printed
    table = pd.read_csv(out / "predictions.csv")
    assert table["clip"].tolist() == [clip.stem] and table["named_emotion"].item() in EMOTIONS
    assert (out / f"attention_{clip.stem}.png").stat().st_size > 10_000


def test_a_second_scoring_into_the_same_folder_is_refused_and_keeps_the_first(tiny_run, tiny_synthetic, tmp_path, capsys):
    first, second = _clips(tiny_synthetic, 4, 2)
    out = tmp_path / "pred"
    assert cli.main(["predict", str(tiny_run), str(first), "--out-dir", str(out)]) == 0
    assert cli.main(["predict", str(tiny_run), str(second), "--out-dir", str(out)]) == 2
    assert "predictions.csv already exists" in capsys.readouterr().err
    assert pd.read_csv(out / "predictions.csv")["clip"].tolist() == [first.stem]


def test_default_output_is_a_new_folder_in_the_run(tiny_run, tiny_synthetic):
    scores = inference.predict_clips(tiny_run, _clips(tiny_synthetic, 4, 1))
    a, b = report.write_predictions(scores), report.write_predictions(scores)
    assert a != b and a.parent == b.parent == tiny_run / "predictions"


def test_a_pyfeat_file_for_an_openface_run_is_refused_naming_both_formats(tiny_run, tmp_path):
    path = tmp_path / "my_clip.csv"
    pd.DataFrame(np.full((4, 20), 0.3), columns=openface.PYFEAT_AU_COLUMNS).rename_axis("frame").to_csv(path)
    with pytest.raises(ValueError, match=r"my_clip.csv holds pyfeat AUs \(20 columns\).*openface AUs \(input_size 35\)"):
        inference.predict_clips(tiny_run, [path])


def test_a_missing_file_and_two_files_of_one_name_are_errors_naming_them(tiny_run, tiny_synthetic, tmp_path):
    with pytest.raises(ValueError, match="nope.csv: no such file"):
        inference.predict_clips(tiny_run, [tmp_path / "nope.csv"])
    clip = _clips(tiny_synthetic, 4, 1)[0]
    (tmp_path / "copy").mkdir()
    twin = shutil.copy(clip, tmp_path / "copy" / clip.name)
    with pytest.raises(ValueError, match=f"share the clip name '{clip.stem}'"):
        inference.predict_clips(tiny_run, [clip, twin])


def test_a_raw_openface_file_of_any_name_is_scored(tiny_run):
    raw = REAL_OPENFACE / "openface22_video_featureextraction.csv"
    if not raw.is_file():
        pytest.skip(f"{raw} is absent")
    scores = inference.predict_clips(tiny_run, [raw])
    assert scores.table["frames"].item() == len(openface.read_aus(raw))
    assert scores.table["actor"].item() == "" and scores.table["named_emotion"].item() == ""


@pytest.fixture(scope="module")
def zscore_run(tiny_synthetic, tiny_params, tmp_path_factory):
    """A 1-epoch, 2-fold run with per-actor z-score normalization."""
    from aus_lib import folds, runs, train
    from aus_lib.config import load_config

    root = tmp_path_factory.mktemp("zscore_run")
    cfg = load_config(tiny_params, {"kfolds": 2, "epochs": 1, "actor_normalization": "zscore"})
    manifest = folds.load_or_make(root / "folds", 2, aus_dir=tiny_synthetic, seed=7)
    run_dir = runs.prepare_run_dir(root / "runs", "z", train.run_fingerprint(cfg, manifest))
    train.train_cv(cfg, manifest, run_dir, progress=False)
    return run_dir


def test_actor_normalization_shares_statistics_within_a_named_actor(zscore_run, tiny_synthetic, tmp_path):
    first, second = _clips(tiny_synthetic, 2, 2)
    together = inference.predict_clips(zscore_run, [first, second]).table
    assert together["statistics"].tolist() == ["zscore of actor 2 from 2 given clip(s)"] * 2
    with pytest.warns(UserWarning, match="own statistics"):
        alone = inference.predict_clips(zscore_run, [first]).table
    assert alone["statistics"].item() == "zscore of actor 2 from 1 given clip(s) (this clip alone)"
    p = [f"p_{e}" for e in EMOTIONS]
    assert not np.allclose(together.loc[0, p].astype(float), alone.loc[0, p].astype(float))

    renamed = shutil.copy(first, tmp_path / "someone.csv")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        unknown = inference.predict_clips(zscore_run, [renamed]).table
    assert unknown["statistics"].item().startswith("zscore of this clip alone (no RAVDESS name")
    np.testing.assert_allclose(unknown[p].to_numpy(float), alone[p].to_numpy(float), rtol=1e-6)
