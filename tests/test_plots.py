"""Tests for aus_lib.plots: every builder saves a titled, labelled PNG with emotion names."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from aus_lib import attention_plots, paths, plots  # noqa: E402
from aus_lib.openface import AU_COLUMNS, AU_INTENSITY, AU_PRESENCE, PROCESSED_SEP  # noqa: E402
from aus_lib.ravdess import EMOTIONS, LABELS  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def _history(n: int = 6) -> pd.DataFrame:
    val_acc = [0.2, 0.35, 0.5, 0.45, 0.55, 0.52][:n]
    return pd.DataFrame({
        "epoch": range(1, n + 1), "train_loss": np.linspace(2, 0.5, n), "train_accuracy": np.linspace(0.2, 0.9, n),
        "val_loss": np.linspace(2, 1.2, n), "val_accuracy": val_acc, "val_precision": 0.5, "val_recall": 0.5,
        "val_f1": np.array(val_acc) - 0.02, "best": [True, True, True, False, True, False][:n],
    })


def _cm() -> pd.DataFrame:
    """8x8 counts in the saved (alphabetical LABELS) order; row i holds 10*(i+1) on its diagonal."""
    values = np.ones((8, 8), dtype=int) + np.diag(10 * np.arange(1, 9))
    return pd.DataFrame(values, index=list(LABELS), columns=list(LABELS))


def _clip(frames: int = 40) -> pd.DataFrame:
    data = np.hstack([RNG.uniform(0, 5, (frames, len(AU_INTENSITY))),
                      RNG.integers(0, 2, (frames, len(AU_PRESENCE)))])
    return pd.DataFrame(data, columns=list(AU_COLUMNS))


def _attention(frames: int = 40) -> np.ndarray:
    weights = RNG.random(frames)
    return weights / weights.sum()


def _examples() -> list[dict]:
    return [
        {"aus": _clip(30), "attention": _attention(30), "clip": "01-01-03-01-01-01-01", "true": "happy", "pred": "happy"},
        {"aus": _clip(45).to_numpy(), "attention": _attention(45), "clip": "01-01-05-01-01-01-02",
         "true": "angry", "pred": "sad"},
        {"aus": _clip(35), "attention": _attention(35), "clip": "01-01-04-01-01-01-03",
         "true": LABELS.index("sad"), "pred": LABELS.index("sad")},
    ]


def _by_emotion(values, columns=None) -> pd.DataFrame:
    return pd.DataFrame(values, index=list(LABELS), columns=columns)


# name -> (builder taking (title, path), expected (xlabel, ylabel) pairs found on the figure's axes)
BUILDERS = {
    "learning_curve": (lambda t, p: plots.learning_curve(_history(), t, path=p),
                       [("Epoch", "Cross-entropy loss"), ("Epoch", "Score (%)")]),
    "confusion_matrix": (lambda t, p: plots.confusion_matrix(_cm(), t, path=p),
                         [("Predicted emotion", "True emotion")]),
    "attention_heatmap": (lambda t, p: attention_plots.attention_heatmap(_clip(), _attention(), t, path=p),
                          [("Frame", "AU presence")]),
    "attention_grid": (lambda t, p: attention_plots.attention_grid(_examples(), t, path=p), [("Frame", "AU intensity (0\u20135)")]),
    "attention_profiles": (lambda t, p: attention_plots.attention_profiles(_by_emotion(RNG.random((8, 5))), t, path=p),
                           [("Normalized time in clip", "Mean attention weight")]),
    "au_importance": (lambda t, p: attention_plots.au_importance(_by_emotion(RNG.normal(size=(8, 35)), list(AU_COLUMNS)), t,
                                                       path=p), [("Action Unit", "Emotion")]),
    "per_emotion_bar": (lambda t, p: plots.per_emotion_bar(_by_emotion(RNG.random((8, 5))), t, "Recall", path=p),
                        [("Emotion", "Recall")]),
    "fold_emotion_counts": (lambda t, p: plots.fold_emotion_counts(
        pd.DataFrame(RNG.integers(20, 40, (5, 8)), index=range(1, 6), columns=list(EMOTIONS)), t, path=p),
        [("Emotion", "Fold")]),
    "frames_histogram": (lambda t, p: plots.frames_histogram(RNG.integers(80, 140, 200), t, path=p),
                         [("Frames per clip", "Clips")]),
    "metric_comparison": (lambda t, p: plots.metric_comparison(pd.DataFrame(
        {"accuracy": [60.0, 62.13], "ci_low": [57.0, np.nan], "ci_high": [63.0, np.nan]},
        index=["BiLSTM (this run)", "Paper: BiLSTM"]), t, path=p), [("Accuracy (%)", "Method")]),
}


def _tick_texts(ax, axis: str) -> list[str]:
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in labels]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_saves_png_atomically_with_title(name, tmp_path):
    build, _ = BUILDERS[name]
    target = tmp_path / f"{name}.png"
    fig = build(f"Title of {name}", target)
    assert target.read_bytes()[:8] == PNG_MAGIC and target.stat().st_size > 5000
    assert f"Title of {name}" in fig.get_suptitle()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_labels_axes(name):
    build, expected = BUILDERS[name]
    fig = build("t", None)
    found = {(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes}
    for pair in expected:
        assert pair in found, f"{pair} not among {found}"


def test_builders_do_not_register_with_pyplot(tmp_path):
    before = plt.get_fignums()
    for build, _ in BUILDERS.values():
        build("t", None)
    assert plt.get_fignums() == before


def test_figure_renders_itself_as_png_for_jupyter():
    fig = plots.per_emotion_bar(pd.Series([0.5] * 8, index=list(EMOTIONS)), "t", "Recall")
    assert fig._repr_png_()[:8] == PNG_MAGIC


def test_confusion_matrix_ticks_are_emotion_names_in_display_order(tmp_path):
    fig = plots.confusion_matrix(_cm(), "t", path=tmp_path / "cm.png")
    ax = fig.axes[0]
    assert _tick_texts(ax, "x") == list(EMOTIONS)
    assert _tick_texts(ax, "y") == list(EMOTIONS)


def test_confusion_matrix_cells_follow_the_reordering(tmp_path):
    fig = plots.confusion_matrix(_cm(), "t", path=tmp_path / "cm.png")
    ax = fig.axes[0]
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}  # centres
    happy = EMOTIONS.index("happy")
    assert cells[(happy, happy)] == str(10 * (LABELS.index("happy") + 1) + 1)


def test_confusion_matrix_normalize_writes_row_percentages(tmp_path):
    fig = plots.confusion_matrix(_cm(), "t", normalize=True, path=tmp_path / "cm.png")
    ax = fig.axes[0]
    neutral = EMOTIONS.index("neutral")
    row = [t.get_text() for t in ax.texts if int(t.get_position()[1]) == neutral]
    diag = 10 * (LABELS.index("neutral") + 1) + 1
    assert row[neutral] == f"{100 * diag / (diag + 7):.0f}%"
    assert all(text.endswith("%") for text in row)


def test_confusion_matrix_rejects_numeric_labels():
    cm = pd.DataFrame(np.eye(8), index=range(8), columns=range(8))
    with pytest.raises(ValueError, match="emotion names"):
        plots.confusion_matrix(cm, "t")


@pytest.mark.parametrize("name, axis", [("au_importance", "y"), ("per_emotion_bar", "x"), ("fold_emotion_counts", "x")])
def test_emotion_ticks_are_names_in_display_order(name, axis, tmp_path):
    fig = BUILDERS[name][0]("t", tmp_path / "f.png")
    assert _tick_texts(fig.axes[0], axis) == list(EMOTIONS)


def test_attention_profiles_one_line_per_emotion_in_palette_colour():
    fig = attention_plots.attention_profiles(_by_emotion(RNG.random((8, 4))), "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(EMOTIONS)
    assert [to_hex(line.get_color()).upper() for line in ax.lines] == [plots.EMOTION_COLORS[e].upper() for e in EMOTIONS]


def test_per_emotion_bar_accepts_folds_as_rows_and_draws_means():
    folds = pd.DataFrame(RNG.random((5, 8)), index=range(1, 6), columns=list(LABELS))
    fig = plots.per_emotion_bar(folds, "t", "Recall")
    heights = [patch.get_height() for patch in fig.axes[0].patches]
    assert heights == pytest.approx(folds.mean()[list(EMOTIONS)].to_list())


def test_attention_grid_marks_misclassified_examples(tmp_path):
    fig = attention_plots.attention_grid(_examples(), "t", path=tmp_path / "g.png")
    titles = {ax.get_title(): ax.title.get_color() for ax in fig.axes if ax.get_title()}
    wrong = [t for t in titles if "01-01-05-01-01-01-02" in t]
    right = [t for t in titles if "01-01-03-01-01-01-01" in t]
    assert len(wrong) == 1 and plots.WRONG_MARK in wrong[0] and "true angry" in wrong[0] and "pred sad" in wrong[0]
    assert to_hex(titles[wrong[0]]).upper() == plots.SERIES_COLORS["wrong"].upper()
    assert len(right) == 1 and plots.WRONG_MARK not in right[0] and plots.RIGHT_MARK in right[0]
    assert "1 of 3 misclassified" in fig.get_suptitle()


def test_attention_grid_names_emotions_given_as_label_indices():
    fig = attention_plots.attention_grid(_examples(), "t")
    titles = [ax.get_title() for ax in fig.axes if "01-01-04-01-01-01-03" in ax.get_title()]
    assert titles and "true sad" in titles[0] and "pred sad" in titles[0]


def test_attention_heatmap_rejects_attention_of_wrong_length():
    with pytest.raises(ValueError, match="one weight per frame"):
        attention_plots.attention_heatmap(_clip(40), _attention(39), "t")


def test_attention_heatmap_on_a_real_clip_separates_intensity_and_presence(tmp_path):
    clips = sorted((paths.SHARED_DATA / "ravdess_real").glob("*.csv"))
    if not clips:
        pytest.skip(f"no real clips under {paths.SHARED_DATA / 'ravdess_real'}")
    aus = pd.read_csv(clips[0], sep=PROCESSED_SEP)
    fig = attention_plots.attention_heatmap(aus, _attention(len(aus)), clips[0].stem, path=tmp_path / "real.png")
    panels = {ax.get_ylabel(): _tick_texts(ax, "y") for ax in fig.axes if ax.get_ylabel().startswith("AU ")}
    assert panels["AU intensity (0\u20135)"] == [c[:-2] for c in AU_INTENSITY]
    assert panels["AU presence"] == [c[:-2] for c in AU_PRESENCE]
    assert (tmp_path / "real.png").stat().st_size > 0


def test_learning_curve_marks_last_best_epoch():
    fig = plots.learning_curve(_history(), "t")
    for ax in fig.axes:
        vertical = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(vertical) == 1 and vertical[0].get_xdata()[0] == 5
    assert any("best: epoch 5" in text.get_text() for text in fig.axes[1].texts)


def test_learning_curve_names_a_missing_column():
    with pytest.raises(ValueError, match="val_f1"):
        plots.learning_curve(_history().drop(columns="val_f1"), "t")


def test_frames_histogram_by_emotion_uses_display_order():
    lengths = RNG.integers(80, 140, 80)
    by = pd.Series(np.array(LABELS * 10), name="emotion")
    fig = plots.frames_histogram(lengths, "t", by=by)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(EMOTIONS)


def test_metric_comparison_draws_fractions_as_percent():
    table = pd.DataFrame({"accuracy": [0.6, 0.5]}, index=["a", "b"])
    fig = plots.metric_comparison(table, "t")
    assert [patch.get_width() for patch in fig.axes[0].patches] == pytest.approx([60.0, 50.0])


def test_metric_comparison_rejects_interval_not_containing_accuracy():
    table = pd.DataFrame({"accuracy": [60.0], "ci_low": [61.0], "ci_high": [65.0]}, index=["BiLSTM"])
    with pytest.raises(ValueError, match="'BiLSTM'.*outside"):
        plots.metric_comparison(table, "t")


def test_metric_comparison_requires_row_names():
    with pytest.raises(ValueError, match="row names"):
        plots.metric_comparison(pd.DataFrame({"accuracy": [60.0]}), "t")


def test_save_failure_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "fig.png"
    target.write_bytes(b"previous")
    fig = plots.per_emotion_bar(pd.Series([0.5] * 8, index=list(EMOTIONS)), "t", "Recall")

    def broken_savefig(fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save(fig, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_save_requires_png_suffix(tmp_path):
    fig = plots.per_emotion_bar(pd.Series([0.5] * 8, index=list(EMOTIONS)), "t", "Recall")
    with pytest.raises(ValueError, match=r"\.png"):
        plots.save(fig, tmp_path / "fig.pdf")


def test_emotion_order_uses_display_order_and_label_indices():
    assert plots.emotion_order(LABELS) == list(EMOTIONS)
    assert plots.emotion_order([LABELS.index("sad"), "Happy", "happy"]) == ["happy", "sad"]


def test_palette_covers_every_emotion_with_distinct_colours():
    assert set(plots.EMOTION_COLORS) == set(EMOTIONS)
    assert len(set(plots.EMOTION_COLORS.values())) == len(EMOTIONS)
