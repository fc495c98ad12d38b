"""The attention figures: which AU frames the model attends to, per clip, per emotion, per AU.

Drawn with the look, palette and saving of :mod:`aus_lib.plots` (see its figure policy: each
builder returns a :class:`~aus_lib.plots.PlotFigure`, written as PNG with ``path``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from aus_lib.openface import AU_COLUMNS
from aus_lib.plots import (AU_INTENSITY_RANGE, DIVERGING_CMAP, EMOTION_COLORS, RIGHT_MARK, SEQUENCE_CMAP, SERIES_COLORS,
                           WRONG_MARK, PlotFigure, draw_heatmap, emotion_rows, finish_figure, frame_heatmap_axes,
                           new_figure, numeric_table, seconds_axis)
from aus_lib.ravdess import emotion_name

# ---------------------------------------------------------------------------- helpers

def _au_channels(aus: pd.DataFrame | np.ndarray, attention: np.ndarray, au_names: Sequence[str] | None,
                 what: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Validate an AU sequence and its attention weights; return (frames x channels, names, weights)."""
    if isinstance(aus, pd.DataFrame):
        names = list(au_names) if au_names is not None else [str(c) for c in aus.columns]
        matrix = numeric_table(aus, what).to_numpy()
    else:
        matrix = np.asarray(aus, dtype=float)
        if matrix.ndim != 2:
            raise ValueError(f"{what}: aus must be 2-D (frames x AU channels), got shape {matrix.shape}.")
        if au_names is None and matrix.shape[1] != len(AU_COLUMNS):
            raise ValueError(f"{what}: aus has {matrix.shape[1]} channels, not the {len(AU_COLUMNS)} "
                             "openface.AU_COLUMNS; pass au_names or a DataFrame with named columns.")
        names = list(au_names) if au_names is not None else list(AU_COLUMNS)
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{what}: {len(names)} au_names for {matrix.shape[1]} AU channels.")
    if matrix.shape[0] == 0:
        raise ValueError(f"{what}: aus has no frames.")
    weights = np.asarray(attention, dtype=float).squeeze()
    if weights.ndim != 1 or weights.shape[0] != matrix.shape[0]:
        raise ValueError(f"{what}: attention must hold one weight per frame ({matrix.shape[0]} frames), "
                         f"got shape {np.shape(attention)}.")
    return matrix, names, weights


def _channel_groups(matrix: np.ndarray, names: list[str]) -> list[dict]:
    """Split AU channels into intensity (_r), presence (_c) and other panels, each with its scale."""
    groups = []
    for suffix, label, fixed in (("_r", "AU intensity (0\u20135)", AU_INTENSITY_RANGE),
                                 ("_c", "AU presence", (0.0, 1.0))):
        idx = [i for i, n in enumerate(names) if n.endswith(suffix)]
        if idx:
            groups.append({"label": label, "names": [names[i][: -len(suffix)] for i in idx],
                           "data": matrix[:, idx].T, "range": fixed})
    taken = {i for i, n in enumerate(names) if n.endswith(("_r", "_c"))}
    rest = [i for i in range(len(names)) if i not in taken]
    if rest:
        data = matrix[:, rest].T
        finite = data[np.isfinite(data)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        groups.append({"label": "AU channels", "names": [names[i] for i in rest], "data": data,
                       "range": (low, high if high > low else low + 1.0)})
    return groups


def _draw_attention(ax: Axes, weights: np.ndarray) -> None:
    frames = np.arange(len(weights))
    ax.plot(frames, weights, color=SERIES_COLORS["attention"], linewidth=1.5)
    ax.fill_between(frames, 0, weights, color=SERIES_COLORS["attention"], alpha=0.25, linewidth=0)
    top = float(np.nanmax(weights)) if np.isfinite(weights).any() else 1.0
    ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)


def _draw_channels(ax: Axes, group: dict, frames: int):
    low, high = group["range"]
    # Presence is binary: two flat colours read better than a gradient.
    cmap = mpl.colormaps[SEQUENCE_CMAP].resampled(2) if group["label"] == "AU presence" else SEQUENCE_CMAP
    image = ax.imshow(group["data"], aspect="auto", interpolation="nearest", cmap=cmap,
                      vmin=low, vmax=high, extent=(-0.5, frames - 0.5, len(group["names"]) - 0.5, -0.5))
    frame_heatmap_axes(ax)
    return image


# ---------------------------------------------------------------------------- figures

def attention_heatmap(aus: pd.DataFrame | np.ndarray, attention: np.ndarray, title: str,
                      au_names: Sequence[str] | None = None, path: str | os.PathLike | None = None) -> PlotFigure:
    """One clip: attention weights over frames above heatmaps of its AU channels (same time axis).

    ``aus`` is frames x channels (a DataFrame's columns name the channels; an array of 35
    columns is taken as ``openface.AU_COLUMNS``). Intensities (``_r``, 0-5) and presence
    (``_c``, 0/1) are drawn as separate panels.
    """
    matrix, names, weights = _au_channels(aus, attention, au_names, "attention_heatmap")
    frames = matrix.shape[0]
    groups = _channel_groups(matrix, names)

    heights = [2.2] + [max(1.5, 0.2 * len(g["names"])) for g in groups]
    fig = new_figure(title, (11, 1.6 + sum(heights)))
    grid = fig.add_gridspec(len(heights), 2, width_ratios=[60, 1], height_ratios=heights)
    ax_att = fig.add_subplot(grid[0, 0])
    _draw_attention(ax_att, weights)
    ax_att.set_ylabel("Attention\nweight")
    ax_att.set_xlim(-0.5, frames - 0.5)
    ax_att.tick_params(labelbottom=False)
    seconds_axis(ax_att)

    for row, group in enumerate(groups, start=1):
        ax = fig.add_subplot(grid[row, 0], sharex=ax_att)
        image = _draw_channels(ax, group, frames)
        ax.set_yticks(range(len(group["names"])), labels=group["names"], fontsize=8)
        ax.set_ylabel(group["label"])
        last = row == len(groups)
        ax.tick_params(labelbottom=last)
        if last:
            ax.set_xlabel("Frame")
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[row, 1]))
        if group["label"] == "AU presence":
            bar.set_ticks([0.25, 0.75], labels=["absent", "present"])
    return finish_figure(fig, path)


def attention_grid(examples: list[dict], title: str, path: str | os.PathLike | None = None,
                   ncols: int = 4) -> PlotFigure:
    """Small attention heatmaps for several clips; misclassified ones in red with ✗.

    Each example: ``aus`` (frames x 35 or a named DataFrame), ``attention`` (one weight per
    frame), ``clip`` (name), ``true`` and ``pred`` (emotion names or ``LABELS`` indices).
    Panels show AU intensities (``_r``; all channels if there are none) under the attention.
    """
    if not examples:
        raise ValueError("attention_grid: examples is empty; pass at least one example dict.")
    prepared = []
    for k, example in enumerate(examples):
        missing = [key for key in ("aus", "attention", "clip", "true", "pred") if key not in example]
        if missing:
            raise ValueError(f"attention_grid: example {k} lacks key(s) {', '.join(missing)}; "
                             "each needs aus, attention, clip, true, pred.")
        what = f"attention_grid example {k} ({example['clip']})"
        matrix, names, weights = _au_channels(example["aus"], example["attention"], None, what)
        prepared.append((example, weights, _channel_groups(matrix, names)[0],
                         emotion_name(example["true"]), emotion_name(example["pred"])))

    ncols = max(1, min(ncols, len(prepared)))
    nrows = math.ceil(len(prepared) / ncols)
    n_wrong = sum(true != pred for _, _, _, true, pred in prepared)
    fig = new_figure(title, (3.3 * ncols + 1.2, 2.9 * nrows + 1.0))
    fig.suptitle(f"{title}\n{n_wrong} of {len(prepared)} misclassified (marked {WRONG_MARK}, in red)")
    # A narrow last column holds the shared colour bar (constrained layout collapses when a
    # colour bar steals space from many nested sub-grids).
    outer = fig.add_gridspec(nrows, ncols + 1, width_ratios=[1.0] * ncols + [0.06])
    image = None
    for k, (example, weights, group, true, pred) in enumerate(prepared):
        row, col = divmod(k, ncols)
        cell = outer[row, col].subgridspec(2, 1, height_ratios=[1, 2.6], hspace=0.05)
        ax_att = fig.add_subplot(cell[0])
        ax = fig.add_subplot(cell[1], sharex=ax_att)
        frames = len(weights)
        _draw_attention(ax_att, weights)
        ax_att.set_xlim(-0.5, frames - 0.5)
        ax_att.tick_params(labelbottom=False, labelleft=False, left=False)
        image = _draw_channels(ax, group, frames)
        step = max(1, math.ceil(len(group["names"]) / 9))  # about nine readable labels per panel
        ticks = range(0, len(group["names"]), step)
        ax.set_yticks(list(ticks), labels=[group["names"][i] for i in ticks], fontsize=7)
        ax.tick_params(axis="x", labelsize=8)
        if col == 0:
            ax.set_ylabel(group["label"], fontsize=9)
            ax_att.set_ylabel("Attn.", fontsize=9)
        else:
            ax.tick_params(labelleft=False)
        ax.set_xlabel("Frame", fontsize=9)

        wrong = true != pred
        colour = SERIES_COLORS["wrong"] if wrong else SERIES_COLORS["correct"]
        mark = WRONG_MARK if wrong else RIGHT_MARK
        ax_att.set_title(f"{example['clip']}\ntrue {true} \u00b7 pred {pred} {mark}",
                         fontsize=9, color=colour, fontweight="bold" if wrong else "normal")
        if wrong:
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=2.2)
    fig.colorbar(image, cax=fig.add_subplot(outer[:, ncols]), label=prepared[0][2]["label"])
    return finish_figure(fig, path)


def attention_profiles(profiles: pd.DataFrame, title: str, path: str | os.PathLike | None = None) -> PlotFigure:
    """Mean attention per normalized-time bin, one line per emotion.

    ``profiles``: emotions (names) x time bins. Float column labels within [0, 1] are used
    as bin positions; any other labels are taken as consecutive bins, drawn at their centres.
    """
    what = "attention_profiles profiles"
    if not isinstance(profiles, pd.DataFrame) or profiles.empty:
        raise ValueError(f"{what}: expected a non-empty DataFrame of emotions x time bins.")
    rows = numeric_table(emotion_rows(profiles, what), what)
    labels = rows.columns
    if pd.api.types.is_float_dtype(labels) and labels.min() >= 0 and labels.max() <= 1:
        x = labels.to_numpy(dtype=float)
    else:
        x = (np.arange(len(labels)) + 0.5) / len(labels)

    fig = new_figure(title, (8.5, 4.6))
    ax = fig.subplots()
    for emotion, values in rows.iterrows():
        ax.plot(x, values.to_numpy(), marker="o", markersize=3, color=EMOTION_COLORS[emotion], label=emotion)
    ax.set(xlabel="Normalized time in clip", ylabel="Mean attention weight", xlim=(0, 1))
    ax.legend(title="Emotion", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return finish_figure(fig, path)


def au_importance(importance: pd.DataFrame, title: str, path: str | os.PathLike | None = None) -> PlotFigure:
    """Emotion x AU importance heatmap (a diverging scale centred on 0 when values are signed)."""
    what = "au_importance importance"
    if not isinstance(importance, pd.DataFrame) or importance.empty:
        raise ValueError(f"{what}: expected a non-empty DataFrame of emotions x AUs.")
    rows = numeric_table(emotion_rows(importance, what), what)
    values = rows.to_numpy()
    finite = values[np.isfinite(values)]
    if not finite.size:
        raise ValueError(f"{what}: no finite values to draw.")
    if finite.min() < 0:
        limit = float(np.abs(finite).max()) or 1.0
        cmap, vmin, vmax = DIVERGING_CMAP, -limit, limit
    else:
        cmap, vmin, vmax = SEQUENCE_CMAP, 0.0, float(finite.max()) or 1.0

    fig = new_figure(title, (max(7.0, 0.3 * rows.shape[1] + 3.0), 0.45 * rows.shape[0] + 2.4))
    ax = fig.subplots()
    draw_heatmap(ax, values, [str(c) for c in rows.columns], list(rows.index), cmap=cmap, vmin=vmin, vmax=vmax,
             bar={"label": "Importance", "shrink": 0.9})
    ax.tick_params(axis="x", labelsize=8, rotation=90)
    suffixes = [str(c)[-2:] for c in rows.columns]
    for j in range(1, len(suffixes)):
        if suffixes[j] != suffixes[j - 1] and {suffixes[j], suffixes[j - 1]} == {"_r", "_c"}:
            ax.axvline(j, color="black", linewidth=1.5)  # intensities | presence
    ax.set(xlabel="Action Unit", ylabel="Emotion")
    return finish_figure(fig, path)
