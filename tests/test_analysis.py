"""Metrics, the paper's confidence interval, summaries of posterior folders, attention tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aus_lib.analysis import (
    PAPER_RESULTS,
    accuracy_ci,
    attention_au_importance,
    classification_metrics,
    comparison_table,
    confusion,
    confusion_by_fold,
    mean_attention_profile,
    per_emotion_recall,
    pooled_accuracy,
    summarize_posteriors,
)
from aus_lib.openface import AU_COLUMNS
from aus_lib.posteriors import write_posteriors
from aus_lib.ravdess import EMOTIONS, LABELS, make_name


def test_three_of_four_correct():
    m = classification_metrics(["happy", "sad", "angry", "calm"], ["happy", "sad", "angry", "sad"])
    assert m["n"] == 4
    assert m["accuracy"] == 0.75
    p, h = accuracy_ci(3, 4)
    assert p == 0.75
    assert h == pytest.approx(1.96 * math.sqrt(0.75 * 0.25 / 4))


def test_ci_reproduces_the_papers_plus_minus():
    # 62.13 % of the 1440 clips is 895 clips; the paper reports 62.13 ± 2.51.
    p, h = accuracy_ci(895, 1440)
    assert round(100 * p, 2) == 62.15
    assert round(100 * h, 2) == 2.51


def test_ci_rejects_impossible_counts():
    with pytest.raises(ValueError, match="outside 0..n"):
        accuracy_ci(5, 4)
    with pytest.raises(ValueError, match="at least one clip"):
        accuracy_ci(0, 0)


def test_uar_differs_from_weighted_recall_on_imbalanced_labels():
    y_true = ["happy"] * 8 + ["sad"] * 2
    y_pred = ["happy"] * 10
    m = classification_metrics(y_true, y_pred)
    assert m["recall"] == pytest.approx(0.8)   # weighted recall equals accuracy
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["uar"] == pytest.approx(0.5)      # (1.0 + 0.0) / 2
    # weighted precision: happy 0.8 precise with weight 0.8, sad undefined -> 0
    assert m["precision"] == pytest.approx(0.64)


def test_metrics_equal_scikit_learns_to_the_last_bit():
    """classification_metrics computes what scikit-learn computes (it no longer imports it)."""
    from sklearn.metrics import precision_recall_fscore_support, recall_score

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        # Some classes missing from the truth, some predicted that never occur, some never predicted.
        t = rng.choice(LABELS[: int(rng.integers(1, 9))], size=n)
        p = np.where(rng.random(n) < 0.5, t, rng.choice(LABELS[int(rng.integers(0, 8)):], size=n))
        m = classification_metrics(list(t), list(p))
        precision, recall, f1, _ = precision_recall_fscore_support(t, p, average="weighted", zero_division=0)
        present = [e for e in LABELS if e in set(t)]
        uar = recall_score(t, p, labels=present, average="macro", zero_division=0)
        assert (m["precision"], m["recall"], m["f1"], m["uar"]) == (precision, recall, f1, uar), trial


def test_labels_as_indices_equal_names():
    names_true, names_pred = ["angry", "surprise", "calm"], ["angry", "calm", "calm"]
    idx_true = [LABELS.index(e) for e in names_true]
    idx_pred = [LABELS.index(e) for e in names_pred]
    assert classification_metrics(idx_true, idx_pred) == classification_metrics(names_true, names_pred)


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match=r"y_pred\[1\] = 'joy'"):
        classification_metrics(["happy", "sad"], ["happy", "joy"])
    with pytest.raises(ValueError, match="one prediction per clip"):
        classification_metrics(["happy", "sad"], ["happy"])


def _write_run(folder, outcomes: dict[int, list[tuple[str, str]]]):
    """Posterior files of a K-fold run whose (true, predicted) pairs per fold are given."""
    K = len(outcomes)
    for k, pairs in outcomes.items():
        tags = [make_name(t, 1, 1 + i % 2, 1 + (i // 2) % 2, actor=k) + ".csv" for i, (t, _) in enumerate(pairs)]
        logits = np.zeros((len(pairs), 8), dtype=np.float32)
        for i, (_, p) in enumerate(pairs):
            logits[i, LABELS.index(p)] = 3.0
        write_posteriors(folder, "RAVDESS_AUs", "val", k, K, tags, [t for t, _ in pairs], [p for _, p in pairs],
                         logits, [np.full(4, 0.25)] * len(pairs))


RUN = {
    1: [("happy", "happy"), ("sad", "sad"), ("angry", "angry"), ("calm", "sad")],   # 3/4
    2: [("happy", "sad"), ("sad", "sad")],                                          # 1/2
    3: [("fear", "fear"), ("disgust", "disgust")],                                  # 2/2
}


def test_summarize_posteriors_per_fold_and_mean(tmp_path):
    _write_run(tmp_path, RUN)
    s = summarize_posteriors(tmp_path)
    assert list(s.index) == [1, 2, 3, "mean"]
    assert s.index.name == "fold"
    assert {"n", "accuracy", "precision", "recall", "f1", "uar"} <= set(s.columns)
    assert list(s["n"]) == [4, 2, 2, 8]
    assert s.loc[1, "accuracy"] == 0.75
    assert s.loc[2, "accuracy"] == 0.5
    assert s.loc["mean", "accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert s.loc[1, "ci95"] == pytest.approx(1.96 * math.sqrt(0.75 * 0.25 / 4))
    assert s.attrs["pooled"]["accuracy"] == pytest.approx(6 / 8)
    assert s.attrs["pooled"]["ci95"] == pytest.approx(1.96 * math.sqrt(0.75 * 0.25 / 8))
    assert s.attrs["pooled"]["n"] == 8
    assert pooled_accuracy(tmp_path) == s.attrs["pooled"]


def test_summarize_posteriors_reports_missing_folds(tmp_path):
    _write_run(tmp_path, RUN)
    (tmp_path / "RAVDESS_AUs-val--fold_2_outof_3.csv").unlink()
    with pytest.raises(ValueError, match=r"fold\(s\) \[2\]"):
        summarize_posteriors(tmp_path)


def test_confusion_is_in_display_order_and_normalizes_rows():
    cm = confusion(["happy", "happy", "sad", "neutral"], ["happy", "sad", "sad", "neutral"])
    assert list(cm.index) == list(EMOTIONS) and list(cm.columns) == list(EMOTIONS)
    assert cm.loc["happy", "sad"] == 1 and cm.loc["happy", "happy"] == 1
    assert cm.to_numpy().sum() == 4
    norm = confusion(["happy", "happy", "sad"], ["happy", "sad", "sad"], normalize="true")
    assert norm.loc["happy", "happy"] == 0.5
    assert norm.loc["sad"].sum() == 1.0
    assert norm.loc["angry"].sum() == 0.0  # no angry clips


def test_confusion_by_fold_has_each_fold_and_all(tmp_path):
    _write_run(tmp_path, RUN)
    cms = confusion_by_fold(tmp_path, "val")
    assert set(cms) == {1, 2, 3, "all"}
    assert cms[2].loc["happy", "sad"] == 1
    assert cms["all"].equals(cms[1] + cms[2] + cms[3])


def test_per_emotion_recall_in_display_order():
    r = per_emotion_recall(["happy", "happy", "sad"], ["happy", "sad", "sad"])
    assert list(r.index) == list(EMOTIONS)
    assert r["happy"] == 0.5 and r["sad"] == 1.0
    assert np.isnan(r["angry"])


def test_paper_results_table():
    assert PAPER_RESULTS.loc["BiLSTM + attention", "accuracy"] == 62.13
    assert PAPER_RESULTS.loc["BiLSTM + attention", "ci95"] == 2.51
    assert PAPER_RESULTS.loc["MLP (80)", ["accuracy", "ci95"]].tolist() == [60.22, 2.53]
    assert PAPER_RESULTS.loc["SVC (C=1)", ["accuracy", "ci95"]].tolist() == [59.93, 2.53]
    assert PAPER_RESULTS.loc["Human perception", "accuracy"] == 75.0
    assert PAPER_RESULTS.loc["ZeroR", "accuracy"] == 13.33


def test_comparison_table_flags_test_fold_selection(tmp_path):
    _write_run(tmp_path, RUN)
    run = summarize_posteriors(tmp_path)
    table = comparison_table(run, {"SVC C=1 min-max": run}, selection="test_fold")
    assert list(table["source"]) == ["this run", "baseline, same folds"] + ["paper"] * len(PAPER_RESULTS)
    leaky = "this run (leaky: test-fold selection)"
    assert "optimistic" in table.loc[leaky, "note"]
    assert table.loc[leaky, "accuracy"] == pytest.approx(100 * run.loc["mean", "accuracy"])
    assert table.loc[leaky, "n"] == 8
    assert "optimistic" in table.loc["BiLSTM + attention, AU sequences (paper, leaky: test-fold selection)", "note"]
    inner = comparison_table(run, {}, selection="inner")
    assert "optimistic" not in inner.loc["this run (leak-free)", "note"]


def _clip(t: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((t, len(AU_COLUMNS)))


def test_au_importance_weights_frames_by_attention():
    frames = [_clip(3, 0), _clip(4, 1), _clip(2, 2)]
    att = [np.array([1.0, 0.0, 0.0]), np.array([0.25] * 4), np.array([2.0, 2.0])]
    table = attention_au_importance(frames, att, ["happy", "happy", "sad"])
    assert table.shape == (len(EMOTIONS), len(AU_COLUMNS))
    assert list(table.index) == list(EMOTIONS) and list(table.columns) == list(AU_COLUMNS)
    expected_happy = (frames[0][0] + frames[1].mean(axis=0)) / 2  # each clip counts once
    assert np.allclose(table.loc["happy"].to_numpy(), expected_happy)
    assert np.allclose(table.loc["sad"].to_numpy(), frames[2].mean(axis=0))
    assert table.loc["angry"].isna().all()


def test_au_importance_relative_is_zero_for_uniform_attention():
    frames = [_clip(5, 3)]
    table = attention_au_importance(frames, [np.full(5, 0.2)], [LABELS.index("fear")], relative=True)
    assert np.allclose(table.loc["fear"].to_numpy(), 0.0)


def test_au_importance_accepts_zero_padding_only():
    frames = [_clip(3, 4)]
    padded = attention_au_importance(frames, [np.array([0.5, 0.25, 0.25, 0.0, 0.0])], ["calm"])
    assert np.allclose(padded.loc["calm"].to_numpy(), np.array([0.5, 0.25, 0.25]) @ frames[0])
    with pytest.raises(ValueError, match="clip 0: 4 attention weights for 3 frames"):
        attention_au_importance(frames, [np.array([0.5, 0.25, 0.25, 0.1])], ["calm"])


def test_au_importance_takes_frame_tables():
    x = _clip(3, 5)
    table = attention_au_importance([pd.DataFrame(x, columns=list(AU_COLUMNS))], [np.ones(3)], ["disgust"])
    assert np.allclose(table.loc["disgust"].to_numpy(), x.mean(axis=0))


def test_attention_profile_rows_sum_to_one():
    rng = np.random.default_rng(6)
    att = [rng.random(t) for t in (88, 109, 157, 7)]
    profile = mean_attention_profile(att, ["happy", "happy", "sad", "sad"], bins=20)
    assert profile.shape == (len(EMOTIONS), 20)
    assert np.allclose(profile.loc[["happy", "sad"]].sum(axis=1), 1.0)
    assert profile.loc["neutral"].isna().all()
    assert profile.columns[0] == pytest.approx(0.025) and profile.columns[-1] == pytest.approx(0.975)


def test_uniform_attention_gives_a_flat_profile_for_any_length():
    profile = mean_attention_profile([np.ones(109), np.ones(13)], ["angry", "angry"], bins=20)
    assert np.allclose(profile.loc["angry"].to_numpy(), 1 / 20)


def test_attention_on_the_last_frame_lands_in_the_last_bin():
    att = np.zeros(100)
    att[-1] = 1.0
    profile = mean_attention_profile([att], ["surprise"], bins=10)
    assert profile.loc["surprise"].iloc[-1] == pytest.approx(1.0)
    assert profile.loc["surprise"].iloc[:-1].sum() == pytest.approx(0.0)


def test_attention_profile_rejects_all_zero_weights():
    with pytest.raises(ValueError, match="clip 1: attention weights must be"):
        mean_attention_profile([np.ones(3), np.zeros(3)], ["happy", "sad"])


def test_comparison_rows_of_the_paper_have_readable_names():
    import pandas as pd

    from aus_lib.analysis import comparison_table

    summary = pd.DataFrame({"n": [10, 10], "accuracy": [0.5, 0.5], "uar": [0.5, 0.5], "f1": [0.5, 0.5]},
                           index=pd.Index(["1", "mean"], dtype=object))
    names = comparison_table(summary, {}, "inner").index.tolist()
    assert not any("nan" in n for n in names), names
    assert "MLP (80), averaged AUs, min-max (paper)" in names


def test_04_by_default_takes_the_newest_run_that_has_posteriors(tiny_run, tmp_path):
    import shutil

    from aus_lib import report

    runs_dir = tmp_path / "runs"
    shutil.copytree(tiny_run, runs_dir / "with_posteriors")
    newer = runs_dir / "trained_only"
    newer.mkdir()
    (newer / "config.json").write_text((tiny_run / "config.json").read_text())
    assert report.newest_run_with_posteriors(runs_dir) == runs_dir / "with_posteriors"
    with pytest.raises(FileNotFoundError, match=f"run 03_extract_posteriors with -p run_dir {newer}"):
        report.load_posteriors(newer)


def test_the_comparison_names_every_row_once_and_shows_no_nan(tmp_path):
    from aus_lib.analysis import readable

    _write_run(tmp_path, RUN)
    run = summarize_posteriors(tmp_path)
    table = comparison_table(run, {"MLP (80), averaged AUs, min-max": run}, selection="inner")
    assert table.index.is_unique
    shown = readable(table).to_string()
    assert "NaN" not in shown and "<NA>" not in shown
    assert table.loc["MLP (80), averaged AUs, min-max (paper)", "n"] == 1440
