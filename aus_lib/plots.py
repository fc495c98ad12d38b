"""Every figure of the project, with one palette and one look.

Heatmaps (confusion matrices, fold x emotion counts, AU importance) and histograms are drawn
with seaborn; the attention figures (:mod:`aus_lib.attention_plots`), learning curves and bars
with matplotlib directly, where their layout needs it. All draw on this module's figures,
palette and rcParams.

Figure policy
-------------
* Each builder returns a :class:`PlotFigure` (a plain :class:`matplotlib.figure.Figure`
  subclass) built *without* pyplot. pyplot never tracks these figures, so nothing
  accumulates, nothing needs closing, and a figure is freed when the caller drops it.
  Nothing here calls ``plt.show()`` or ``matplotlib.use()``.
* In Jupyter a returned figure shows when it is the last expression of a cell
  (``PlotFigure`` renders itself as PNG) or with ``display(fig)``. ``plt.show()`` does
  not show it, because pyplot does not know it.
* With ``path`` the figure is also written as PNG at :data:`DPI`, atomically (a temporary
  ``.png`` beside the target, then :func:`os.replace`), so a reader never sees half a file.
* Every builder calls :func:`apply_style`, which updates ``matplotlib.rcParams``: the
  project's look then applies to the whole session (``matplotlib.rcdefaults()`` undoes it).

Emotions are always shown by name, in :data:`aus_lib.ravdess.EMOTIONS` order. Tables
(Series/DataFrames) must carry emotion names; single labels (``true``/``pred``) may also be
integer indices into :data:`aus_lib.ravdess.LABELS`, the order of every saved file.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from aus_lib.ravdess import EMOTIONS, emotion_name
from aus_lib.runs import atomic_path

DPI = 110
FPS = 30  # RAVDESS videos are 30 frames per second.
N_CLASSES = len(EMOTIONS)

# Okabe-Ito, colour-blind safe; its yellow is left out (unreadable as a line on white)
# and a mid grey stands in for neutral.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#999999")
EMOTION_COLORS: dict[str, str] = {
    "neutral": "#999999",
    "calm": "#56B4E9",
    "happy": "#E69F00",
    "sad": "#0072B2",
    "angry": "#D55E00",
    "fear": "#CC79A7",
    "disgust": "#009E73",
    "surprise": "#000000",
}
# Roles that are not emotions (learning curves, attention, comparison bars, markings).
SERIES_COLORS: dict[str, str] = {
    "train": "#0072B2",
    "val": "#D55E00",
    "f1": "#009E73",
    "best": "#555555",
    "attention": "#0072B2",
    "bar": "#0072B2",
    "chance": "#999999",
    "correct": "#000000",
    "wrong": "#D55E00",
}
SEQUENCE_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"
AU_INTENSITY_RANGE = (0.0, 5.0)  # OpenFace AUxx_r scale.
WRONG_MARK = "\u2717"  # ✗
RIGHT_MARK = "\u2713"  # ✓

STYLE: dict[str, object] = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=list(OKABE_ITO)),
    "image.cmap": SEQUENCE_CMAP,
    "lines.linewidth": 1.8,
}


class PlotFigure(Figure):
    """A Figure that Jupyter displays as PNG even though pyplot does not manage it."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def apply_style() -> None:
    """Set the project's rcParams (font sizes, light grid, palette). Idempotent."""
    mpl.rcParams.update(STYLE)


# ---------------------------------------------------------------------------- emotions

def emotion_order(labels: Iterable[str | int]) -> list[str]:
    """The distinct emotions among ``labels`` as names, in display order (``ravdess.EMOTIONS``)."""
    present = {emotion_name(label) for label in labels}
    return [e for e in EMOTIONS if e in present]


def _is_emotion_axis(labels: Iterable) -> bool:
    """True when every label is an emotion *name* (integers are ambiguous with folds)."""
    labels = list(labels)
    return bool(labels) and all(isinstance(x, str) and x.strip().lower() in EMOTION_COLORS for x in labels)


def emotion_rows(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``table`` with emotions as the index, in display order (transposed if they were the columns)."""
    if _is_emotion_axis(table.index):
        rows = table
    elif _is_emotion_axis(table.columns):
        rows = table.T
    else:
        raise ValueError(f"{what}: expected emotion names ({', '.join(EMOTIONS)}) in the index or the "
                         f"columns; got index {list(table.index)[:8]} and columns {list(table.columns)[:8]}.")
    rows = rows.copy()
    rows.index = [emotion_name(x) for x in rows.index]
    if rows.index.duplicated().any():
        raise ValueError(f"{what}: emotion {rows.index[rows.index.duplicated()][0]!r} appears twice.")
    return rows.loc[emotion_order(rows.index)]


# ---------------------------------------------------------------------------- saving

def save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary ``.png`` beside it, then rename)."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"{str(path)!r}: figures are saved as PNG; give a path ending in .png.")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target


def finish_figure(fig: PlotFigure, path: str | os.PathLike | None) -> PlotFigure:
    if path is not None:
        save(fig, path)
    return fig


def new_figure(title: str, size: tuple[float, float]) -> PlotFigure:
    apply_style()
    fig = PlotFigure(figsize=size, layout="constrained")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- helpers

def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; "
                         f"it has {', '.join(map(str, table.columns))}.")
    if table.empty:
        raise ValueError(f"{what}: the table is empty.")


def numeric_table(table: pd.DataFrame, what: str) -> pd.DataFrame:
    try:
        values = table.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: every value must be a number ({err}).") from None
    return values


def _as_percent(values: np.ndarray) -> np.ndarray:
    """Fractions in [0, 1] become percent; values already in percent stay as they are."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return values * 100 if finite.size and finite.max() <= 1.0 else values


def draw_heatmap(ax: Axes, values: np.ndarray, xlabels: Sequence[str], ylabels: Sequence[str], *, cmap, vmin: float,
             vmax: float, bar: dict, texts: np.ndarray | None = None) -> None:
    """A seaborn heatmap of ``values`` (cell (i, j) centred at (j + 0.5, i + 0.5)), ``texts`` written in the
    cells in black or white by the cell's colour, framed, with a colour bar (``bar``: its keywords)."""
    import seaborn  # deferred, as in frames_histogram: seaborn imports pyplot, which this module never needs
    seaborn.heatmap(values, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, xticklabels=list(xlabels),
                    yticklabels=list(ylabels), annot=texts if texts is not None else False, fmt="",
                    annot_kws={"fontsize": 9}, cbar_kws=bar)
    ax.tick_params(axis="y", rotation=0)
    frame_heatmap_axes(ax)


def frame_heatmap_axes(ax: Axes) -> None:
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)


def seconds_axis(ax: Axes, label: str = f"Time (s, at {FPS} fps)") -> None:
    secondary = ax.secondary_xaxis("top", functions=(lambda f: f / FPS, lambda s: s * FPS))
    secondary.set_xlabel(label)


# ---------------------------------------------------------------------------- figures

def learning_curve(history: pd.DataFrame, title: str, path: str | os.PathLike | None = None) -> PlotFigure:
    """Loss, and accuracy with validation F1, per epoch; the best epoch marked.

    ``history``: one row per epoch with epoch, train_loss, train_accuracy, val_loss,
    val_accuracy, val_f1 and best (True on each epoch that became the best so far; the
    last such row is marked). Accuracy and F1 given as fractions are drawn in percent.
    """
    what = "learning_curve history"
    _require_columns(history, ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                               "val_f1", "best"], what)
    bad_best = ~history["best"].isin([True, False])
    if bad_best.any():
        raise ValueError(f"{what}: column 'best' must be True/False; row {history.index[bad_best][0]!r} "
                         f"holds {history['best'][bad_best].iloc[0]!r}.")
    data = numeric_table(history[["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1"]], what)
    epochs = data["epoch"].to_numpy()
    marker = "o" if len(data) <= 40 else None  # dots keep short runs (and 1 epoch) visible

    fig = new_figure(title, (11, 4.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, data["train_loss"], marker=marker, markersize=3, color=SERIES_COLORS["train"], label="train")
    ax_loss.plot(epochs, data["val_loss"], marker=marker, markersize=3, color=SERIES_COLORS["val"], label="validation")
    ax_loss.set(title="Loss", xlabel="Epoch", ylabel="Cross-entropy loss")

    scores = _as_percent(data[["train_accuracy", "val_accuracy", "val_f1"]].to_numpy())
    ax_acc.plot(epochs, scores[:, 0], marker=marker, markersize=3, color=SERIES_COLORS["train"], label="train accuracy")
    ax_acc.plot(epochs, scores[:, 1], marker=marker, markersize=3, color=SERIES_COLORS["val"], label="validation accuracy")
    ax_acc.plot(epochs, scores[:, 2], marker=marker, markersize=3, linestyle="--", color=SERIES_COLORS["f1"],
                label="validation F1")
    ax_acc.set(title="Accuracy and F1", xlabel="Epoch", ylabel="Score (%)")

    best_rows = np.flatnonzero(history["best"].to_numpy(dtype=bool))
    if best_rows.size:
        row = best_rows[-1]
        best_epoch = epochs[row]
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color=SERIES_COLORS["best"], linestyle=":", linewidth=1.4,
                       label=f"best epoch ({best_epoch:g})")
        ax_acc.annotate(f"best: epoch {best_epoch:g}\nval acc {scores[row, 1]:.1f} %\nval F1 {scores[row, 2]:.1f} %",
                        xy=(best_epoch, scores[row, 1]), xytext=(0.98, 0.04), textcoords="axes fraction",
                        ha="right", va="bottom", fontsize=9,
                        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": SERIES_COLORS["best"]},
                        arrowprops={"arrowstyle": "->", "color": SERIES_COLORS["best"]})
    ax_loss.legend(loc="upper right")
    ax_acc.legend(loc="upper left")
    return finish_figure(fig, path)


def confusion_matrix(cm: pd.DataFrame, title: str, normalize: bool = False,
                     path: str | os.PathLike | None = None) -> PlotFigure:
    """Confusion matrix (index: true emotion, columns: predicted emotion, names) as an annotated heatmap.

    ``normalize`` shows each true-emotion row as percentages of that row.
    """
    what = "confusion_matrix cm"
    if not isinstance(cm, pd.DataFrame) or cm.empty:
        raise ValueError(f"{what}: expected a non-empty DataFrame (index true emotion, columns predicted emotion).")
    for axis_name, labels in (("index (true emotion)", cm.index), ("columns (predicted emotion)", cm.columns)):
        if not _is_emotion_axis(labels):
            raise ValueError(f"{what}: the {axis_name} must be emotion names ({', '.join(EMOTIONS)}); "
                             f"got {list(labels)}.")
    counts = numeric_table(cm, what)
    counts.index = [emotion_name(x) for x in counts.index]
    counts.columns = [emotion_name(x) for x in counts.columns]
    if not np.isfinite(counts.to_numpy()).all() or (counts.to_numpy() < 0).any():
        raise ValueError(f"{what}: values must be finite and non-negative.")
    for axis_name, labels in (("index", counts.index), ("columns", counts.columns)):
        if labels.duplicated().any():
            raise ValueError(f"{what}: emotion {labels[labels.duplicated()][0]!r} appears twice in the {axis_name}.")
    # Square, in display order; an emotion missing on one axis gets a row/column of zeros.
    order = emotion_order(list(counts.index) + list(counts.columns))
    counts = counts.reindex(index=order, columns=order, fill_value=0.0)
    raw = counts.to_numpy()
    integer = bool(np.allclose(raw, np.round(raw)))

    if normalize:
        totals = raw.sum(axis=1, keepdims=True)
        values = np.divide(raw * 100, totals, out=np.zeros_like(raw), where=totals > 0)
        texts = np.vectorize(lambda v: f"{v:.0f}%")(values)
        bar_label, vmax = "% of true-emotion clips", 100.0
    else:
        values = raw
        texts = np.vectorize((lambda v: f"{v:.0f}") if integer else (lambda v: f"{v:.2f}"))(values)
        bar_label, vmax = "Clips", max(float(values.max()), 1.0)

    fig = new_figure(title, (7.2, 6.0))
    ax = fig.subplots()
    draw_heatmap(ax, values, order, order, cmap=SEQUENCE_CMAP, vmin=0, vmax=vmax, texts=texts,
             bar={"label": bar_label, "shrink": 0.85})
    ax.set_xticklabels(order, rotation=35, ha="right", rotation_mode="anchor")
    ax.set(xlabel="Predicted emotion", ylabel="True emotion")
    if integer and raw.sum() > 0:  # accuracy only means something on clip counts
        ax.set_title(f"n = {raw.sum():.0f} clips, accuracy {np.trace(raw) / raw.sum():.1%}", fontsize=10)
    return finish_figure(fig, path)


def per_emotion_bar(values: pd.Series | pd.DataFrame, title: str, ylabel: str,
                    path: str | os.PathLike | None = None) -> PlotFigure:
    """One bar per emotion, in its palette colour.

    ``values``: a Series indexed by emotion; or a DataFrame with emotions on one axis and
    repeated measurements (e.g. folds) on the other (bars are the mean ± sd, dots the
    measurements); or a DataFrame with columns ``mean`` and ``sd`` (or ``std``).
    """
    what = "per_emotion_bar values"
    if isinstance(values, pd.Series):
        values = values.to_frame("value")
    if not isinstance(values, pd.DataFrame) or values.empty:
        raise ValueError(f"{what}: expected a non-empty Series or DataFrame indexed by emotion.")
    spread_col = next((c for c in ("sd", "std") if c in values.columns), None)
    if "mean" in values.columns and spread_col is not None:
        rows = numeric_table(emotion_rows(values[["mean", spread_col]], what), what)
        means, spread, points = rows["mean"], rows[spread_col], None
    else:
        rows = numeric_table(emotion_rows(values, what), what)
        means = rows.mean(axis=1)
        points = rows if rows.shape[1] > 1 else None
        spread = rows.std(axis=1, ddof=1) if points is not None else None

    emotions = list(rows.index)
    x = np.arange(len(emotions))
    fig = new_figure(title, (8.5, 4.6))
    ax = fig.subplots()
    ax.bar(x, means, color=[EMOTION_COLORS[e] for e in emotions], edgecolor="#333333", linewidth=0.6,
           yerr=spread, capsize=4, error_kw={"ecolor": "#333333", "elinewidth": 1.2}, zorder=2)
    if points is not None:
        jitter = np.linspace(-0.18, 0.18, points.shape[1])
        for offset, column in zip(jitter, points.columns):
            ax.scatter(x + offset, points[column], s=14, color="white", edgecolor="#333333", linewidth=0.8, zorder=3)
        ax.set_title(f"bars: mean \u00b1 sd over {points.shape[1]} {points.columns.name or 'columns'}; "
                     "dots: individual values", fontsize=9)
    elif spread is not None:
        ax.set_title("bars: mean \u00b1 sd", fontsize=9)
    ax.set_xticks(x, labels=emotions)
    ax.set(xlabel="Emotion", ylabel=ylabel)
    ax.grid(axis="x", visible=False)
    return finish_figure(fig, path)


def fold_emotion_counts(counts: pd.DataFrame, title: str, path: str | os.PathLike | None = None) -> PlotFigure:
    """Clips per fold (rows) and emotion (columns), as a heatmap with the numbers written in."""
    what = "fold_emotion_counts counts"
    if not isinstance(counts, pd.DataFrame) or counts.empty:
        raise ValueError(f"{what}: expected a non-empty DataFrame of folds x emotions.")
    table = numeric_table(emotion_rows(counts, what).T, what)
    values = table.to_numpy()
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{what}: counts must be finite and non-negative.")

    fold_labels = [f"{f if str(f).lower().startswith('fold') else f'Fold {f}'} (n={total:.0f})"
                   for f, total in zip(table.index, values.sum(axis=1))]
    fig = new_figure(title, (8.5, 0.5 * len(table) + 2.6))
    ax = fig.subplots()
    draw_heatmap(ax, values, list(table.columns), fold_labels, cmap=SEQUENCE_CMAP, vmin=0, vmax=max(values.max(), 1.0),
             texts=np.vectorize(lambda v: f"{v:.0f}")(values), bar={"label": "Clips"})
    ax.set(xlabel="Emotion", ylabel="Fold")
    return finish_figure(fig, path)


def frames_histogram(lengths: pd.Series | np.ndarray, title: str, path: str | os.PathLike | None = None,
                     by: pd.Series | np.ndarray | None = None) -> PlotFigure:
    """Histogram of frames per clip; ``by`` (one label per clip, e.g. emotion) overlays one outline per group."""
    what = "frames_histogram lengths"
    values = np.asarray(lengths, dtype=float).ravel()
    if values.size == 0:
        raise ValueError(f"{what}: no clip lengths given.")
    if not np.isfinite(values).all() or (values < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(values) | (values < 0))[0])
        raise ValueError(f"{what}: value {values[bad]!r} at position {bad} is not a frame count.")
    # Whole-frame bins: a fractional width would put unequal numbers of integer lengths per bin.
    auto_width = np.diff(np.histogram_bin_edges(values, bins="auto"))[0] if np.ptp(values) > 0 else 1.0
    width = max(1.0, math.ceil(max(auto_width, np.ptp(values) / 60)))
    edges = np.arange(np.floor(values.min()) - 0.5, values.max() + width, width)

    import seaborn  # deferred: seaborn imports pyplot, which this module never needs

    fig = new_figure(title, (8.5, 4.6))
    ax = fig.subplots()
    if by is None:
        seaborn.histplot(x=values, bins=edges, color=SERIES_COLORS["bar"], edgecolor="white", linewidth=0.5,
                         alpha=1.0, ax=ax, zorder=2)
    else:
        groups = np.asarray(by, dtype=object).ravel()
        if groups.size != values.size:
            raise ValueError(f"frames_histogram by: {groups.size} labels for {values.size} clip lengths.")
        if _is_emotion_axis(set(groups)):
            names = np.array([emotion_name(g) for g in groups], dtype=object)
            order, colours = emotion_order(names), [EMOTION_COLORS[e] for e in emotion_order(names)]
        else:
            names = groups
            order = sorted(set(groups), key=str)
            colours = [OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(order))]
        for group, colour in zip(order, colours):
            seaborn.histplot(x=values[names == group], bins=edges, element="step", fill=False, linewidth=1.8,
                             color=colour, label=str(group), ax=ax, zorder=2)
        ax.legend(title=getattr(by, "name", None), loc="center left", bbox_to_anchor=(1.01, 0.5))
    median = float(np.median(values))
    ax.axvline(median, color=SERIES_COLORS["best"], linestyle=":", linewidth=1.4, zorder=3)
    ax.text(0.99, 0.97, f"n = {values.size} clips\nmedian {median:.0f} frames ({median / FPS:.1f} s)\n"
            f"range {values.min():.0f}\u2013{values.max():.0f}", transform=ax.transAxes, ha="right", va="top",
            fontsize=9, bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#cccccc"})
    ax.set(xlabel="Frames per clip", ylabel="Clips")
    seconds_axis(ax, f"Clip length (s, at {FPS} fps)")
    return finish_figure(fig, path)


def metric_comparison(table: pd.DataFrame, title: str, path: str | os.PathLike | None = None) -> PlotFigure:
    """Horizontal bars of accuracy (%) with confidence intervals, one per row, top to bottom in table order.

    ``table``: index = row names ("BiLSTM (this run)", "Paper: BiLSTM", ...), column
    ``accuracy`` and optional ``ci_low``/``ci_high`` (interval bounds, NaN for none) and
    ``group`` (bars of one group share a colour). Fractions in [0, 1] are drawn as percent.
    """
    what = "metric_comparison table"
    _require_columns(table, ["accuracy"], what)
    if isinstance(table.index, pd.RangeIndex):
        raise ValueError(f"{what}: the index must hold the row names (e.g. table.set_index('name')); "
                         "got a default 0..n-1 index.")
    bound_cols = [c for c in ("ci_low", "ci_high") if c in table.columns]
    if len(bound_cols) == 1:
        raise ValueError(f"{what}: give both ci_low and ci_high, or neither (found only {bound_cols[0]}).")
    numbers = numeric_table(table[["accuracy", *bound_cols]], what)
    scaled = _as_percent(numbers.to_numpy())
    accuracy = scaled[:, 0]
    if not np.isfinite(accuracy).all():
        raise ValueError(f"{what}: row {table.index[~np.isfinite(accuracy)][0]!r} has no accuracy.")
    low, high = (scaled[:, 1], scaled[:, 2]) if bound_cols else (np.full_like(accuracy, np.nan),) * 2
    for name, a, lo, hi in zip(table.index, accuracy, low, high):
        if np.isfinite(lo) and np.isfinite(hi) and not lo <= a <= hi:
            raise ValueError(f"{what}: row {name!r}: accuracy {a:.2f} lies outside its interval "
                             f"[{lo:.2f}, {hi:.2f}]; check the ci_low/ci_high columns (same units as accuracy).")
    has_ci = np.isfinite(low) & np.isfinite(high)
    errors = np.vstack([np.where(has_ci, accuracy - low, 0.0), np.where(has_ci, high - accuracy, 0.0)])

    if "group" in table.columns:
        groups = list(dict.fromkeys(table["group"].astype(str)))
        colour_of = {g: OKABE_ITO[(i + 3) % len(OKABE_ITO)] for i, g in enumerate(groups)}  # blue first
        colours = [colour_of[g] for g in table["group"].astype(str)]
    else:
        colours = [SERIES_COLORS["bar"]] * len(table)

    y = np.arange(len(table))
    fig = new_figure(title, (9.0, 0.55 * len(table) + 1.8))
    ax = fig.subplots()
    ax.barh(y, accuracy, color=colours, height=0.6, zorder=2)
    ax.errorbar(accuracy[has_ci], y[has_ci], xerr=errors[:, has_ci], fmt="none", ecolor="#333333",
                elinewidth=1.3, capsize=4, zorder=3)
    for yi, a, lo, hi, ci in zip(y, accuracy, low, high, has_ci):
        text = f"{a:.1f} % [{lo:.1f}, {hi:.1f}]" if ci else f"{a:.1f} %"
        ax.text((hi if ci else a) + 1.0, yi, text, va="center", fontsize=9)
    chance = 100.0 / N_CLASSES
    ax.axvline(chance, color=SERIES_COLORS["chance"], linestyle="--", linewidth=1.2, zorder=1)
    ax.text(chance, 1.01, f"chance ({N_CLASSES} classes): {chance:.1f} %", transform=ax.get_xaxis_transform(),
            ha="left", va="bottom", fontsize=8, color="#666666")
    ax.set_yticks(y, labels=[str(i) for i in table.index])
    ax.invert_yaxis()
    right = np.nanmax(np.where(has_ci, high, accuracy))
    ax.set_xlim(0, max(100.0, right + 22.0))
    ax.set(xlabel="Accuracy (%)", ylabel="Method")
    ax.grid(axis="y", visible=False)
    if "group" in table.columns:
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color=colour_of[g], label=g) for g in groups], loc="upper left",
                  bbox_to_anchor=(1.01, 1))
    return finish_figure(fig, path)
