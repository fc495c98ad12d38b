"""Metrics, confusion matrices and attention summaries for cross-validated runs.

Accuracies are fractions in [0, 1] everywhere except :data:`PAPER_RESULTS` and
:func:`comparison_table`, which follow the paper and give percentages. The paper's "±" is the
normal-approximation 95 % half-width ``1.96 * sqrt(p (1 - p) / N)`` with ``N`` the number of
clips of the whole data set (1440), which :func:`accuracy_ci` computes.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aus_lib.openface import AU_COLUMNS
from aus_lib.ravdess import EMOTIONS, LABELS, emotion_names

METRIC_COLUMNS = ("n", "accuracy", "precision", "recall", "f1", "uar", "ci95")


# --- labels ------------------------------------------------------------------------------------

def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = emotion_names(y_true, "y_true"), emotion_names(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}; pass one prediction per clip.")
    if len(t) == 0:
        raise ValueError("No labels given: metrics need at least one clip.")
    return t, p


# --- metrics -----------------------------------------------------------------------------------

def accuracy_ci(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Accuracy and its normal-approximation half-width ``z * sqrt(p (1 - p) / n)`` (the paper's ±)."""
    if n <= 0:
        raise ValueError(f"n = {n}: a confidence interval needs at least one clip.")
    if not 0 <= correct <= n:
        raise ValueError(f"correct = {correct} is outside 0..n = {n}.")
    p = correct / n
    return p, _half_width(p, n, z)


def _half_width(p: float, n: int, z: float = 1.96) -> float:
    return z * math.sqrt(p * (1.0 - p) / n)


def classification_metrics(y_true, y_pred) -> dict:
    """n, accuracy, weighted precision / recall / F1 (zero_division=0) and UAR, as fractions.

    UAR (unweighted average recall) is the mean of the per-emotion recalls over the emotions
    present in ``y_true``; weighted recall equals accuracy. Labels are names or LABELS indices.
    Computed as scikit-learn's ``precision_recall_fscore_support(average="weighted",
    zero_division=0)`` and ``recall_score(average="macro")`` compute them (a test pins the
    equality), without importing scikit-learn: it costs a training process ~70 MB and ~1.4 s.
    """
    t, p = _pair(y_true, y_pred)
    labels, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
    t_code, p_code = codes[: len(t)], codes[len(t):]
    tp = np.bincount(t_code[t_code == p_code], minlength=len(labels)).astype(np.float64)
    true_sum = np.bincount(t_code, minlength=len(labels)).astype(np.float64)
    pred_sum = np.bincount(p_code, minlength=len(labels)).astype(np.float64)
    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    f1 = _divide(2 * tp, true_sum + pred_sum)
    # In LABELS order, as recall_score(labels=present) averages them: the same sum, term by term.
    rank = {name: i for i, name in enumerate(labels)}
    present = [rank[e] for e in LABELS if e in rank and true_sum[rank[e]] > 0]
    return {
        "n": int(len(t)),
        "accuracy": float(np.mean(t == p)),
        "precision": float(np.average(precision, weights=true_sum)),
        "recall": float(np.average(recall, weights=true_sum)),
        "f1": float(np.average(f1, weights=true_sum)),
        "uar": float(np.mean(recall[present])),
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return numerator / np.where(denominator == 0, 1.0, denominator)


def _check_long(long: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("fold", "label", "prediction") if c not in long.columns]
    if missing:
        raise ValueError(f"The table lacks column(s) {missing}; pass a run folder, a mapping fold -> "
                         "read_posteriors() table, or a long table (to_long_table / static_cv_predictions).")
    return long


def _load_long(source, partition: str) -> pd.DataFrame:
    """A long table (fold, label, prediction, ...) from a run folder, a mapping or a long table."""
    from aus_lib.posteriors import read_run, to_long_table

    if isinstance(source, (str, os.PathLike)):
        return to_long_table(read_run(Path(source), partition), partition=partition)
    if isinstance(source, Mapping):
        return to_long_table(source, partition=partition)
    if isinstance(source, pd.DataFrame):
        return _check_long(source)
    raise TypeError(f"Expected a run folder, a mapping fold -> table or a long table; got {type(source).__name__}.")


def summarize_predictions(long: pd.DataFrame) -> pd.DataFrame:
    """Per-fold metrics of a long table (``fold``, ``label``, ``prediction``), then a ``mean`` row.

    Rows 1..K (index name ``fold``) hold each fold's metrics and ``ci95`` with that fold's n; the
    ``mean`` row averages the metrics over folds, its ``n`` is the total number of clips and its
    ``ci95`` is computed from the mean accuracy and that total, as the paper does. The pooled
    accuracy over all clips is in ``df.attrs["pooled"] = {"accuracy", "ci95", "n"}``.
    """
    _check_long(long)
    if long.empty:
        raise ValueError("The table has no clips to summarize.")
    rows = {}
    for k, g in long.groupby("fold", sort=True):
        m = classification_metrics(g["label"], g["prediction"])
        m["ci95"] = _half_width(m["accuracy"], m["n"])
        rows[int(k)] = m
    df = pd.DataFrame.from_dict(rows, orient="index")
    mean = df.mean(numeric_only=True)
    mean["n"] = int(df["n"].sum())
    mean["ci95"] = _half_width(mean["accuracy"], mean["n"])
    df = pd.concat([df, mean.to_frame("mean").T])
    df["n"] = df["n"].astype(int)
    df.index = pd.Index(list(df.index), dtype=object, name="fold")
    df = df[list(METRIC_COLUMNS)]
    correct = int((long["label"].to_numpy() == long["prediction"].to_numpy()).sum())
    p, h = accuracy_ci(correct, len(long))
    df.attrs["pooled"] = {"accuracy": p, "ci95": h, "n": int(len(long))}
    return df


def summarize_posteriors(path: str | os.PathLike | Mapping, partition: str = "val") -> pd.DataFrame:
    """Per-fold metrics of a K-fold run's posterior files (see :func:`summarize_predictions`).

    ``path`` is the folder holding the run's ``...-{partition}-...-fold_k_outof_K.csv`` files
    (or a mapping fold -> :func:`~aus_lib.posteriors.read_posteriors` table).
    """
    return summarize_predictions(_load_long(path, partition))


def pooled_accuracy(path: str | os.PathLike | Mapping, partition: str = "val") -> dict:
    """Accuracy over all clips of all folds with its 95 % half-width: ``{"accuracy", "ci95", "n"}``."""
    long = _load_long(path, partition)
    correct = int((long["label"].to_numpy() == long["prediction"].to_numpy()).sum())
    p, h = accuracy_ci(correct, len(long))
    return {"accuracy": p, "ci95": h, "n": int(len(long))}


# --- confusion ---------------------------------------------------------------------------------

def confusion(y_true, y_pred, normalize: str | None = None) -> pd.DataFrame:
    """Confusion counts (rows: true emotion, columns: predicted) in EMOTIONS (display) order.

    ``normalize="true"`` divides each row by its count (rows of emotions absent from ``y_true``
    are 0).
    """
    if normalize not in (None, "true"):
        raise ValueError(f"normalize={normalize!r}: use None (counts) or 'true' (row fractions).")
    t, p = _pair(y_true, y_pred)
    index = {e: i for i, e in enumerate(EMOTIONS)}
    cm = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    np.add.at(cm, ([index[e] for e in t], [index[e] for e in p]), 1)
    df = pd.DataFrame(cm, index=pd.Index(EMOTIONS, name="true"), columns=pd.Index(EMOTIONS, name="predicted"))
    if normalize == "true":
        totals = cm.sum(axis=1, keepdims=True)
        df = pd.DataFrame(np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0),
                          index=df.index, columns=df.columns)
    return df


def confusion_by_fold(folder_or_df, partition: str = "val", normalize: str | None = None) -> dict:
    """Fold k -> confusion matrix, plus ``"all"`` -> the matrix over all folds' clips.

    ``folder_or_df``: a run folder, a mapping fold -> read_posteriors() table, or a long table
    with ``fold``, ``label``, ``prediction`` columns.
    """
    long = _load_long(folder_or_df, partition)
    out: dict = {int(k): confusion(g["label"], g["prediction"], normalize) for k, g in long.groupby("fold", sort=True)}
    out["all"] = confusion(long["label"], long["prediction"], normalize)
    return out


def per_emotion_recall(y_true, y_pred) -> pd.Series:
    """Recall of each emotion in EMOTIONS order (NaN for emotions absent from ``y_true``)."""
    cm = confusion(y_true, y_pred)
    totals = cm.sum(axis=1)
    diag = pd.Series(np.diag(cm.to_numpy()), index=cm.index)
    recall = (diag / totals.replace(0, np.nan)).astype(float)
    recall.index.name = "emotion"
    recall.name = "recall"
    return recall


# --- the paper and comparisons -----------------------------------------------------------------

# Table 2 of Luna-Jiménez et al. 2022 (accuracy and 95 % half-width, in %).
PAPER_RESULTS = pd.DataFrame(
    [
        ("BiLSTM + attention", "AU sequences", None, 62.13, 2.51),
        ("MLP (80)", "averaged AUs", "min-max", 60.22, 2.53),
        ("SVC (C=1)", "averaged AUs", "min-max", 59.93, 2.53),
        ("Human perception", "video", None, 75.00, np.nan),
        ("ZeroR", "none", None, 13.33, np.nan),
    ],
    columns=["model", "features", "normalization", "accuracy", "ci95"],
).set_index("model")

# The paper's figures are over the 1440 speech clips of all 24 actors (its ± uses that N).
PAPER_N = 1440

TEST_FOLD_NOTE = ("optimistic: epochs and checkpoint chosen on the test fold itself (selection='test_fold', "
                  "as in the original code)")


LEAK_FREE_NOTE = "leak-free: epochs and checkpoint chosen on inner validation actors; test fold used once"


def run_label(selection: str) -> str:
    """How a run's row is named wherever it stands beside other results: with its protocol."""
    return "this run (leaky: test-fold selection)" if selection == "test_fold" else "this run (leak-free)"


def comparison_table(run_summary: pd.DataFrame, baselines: Mapping[str, pd.DataFrame], selection: str) -> pd.DataFrame:
    """This run, the static baselines on the same folds and the paper's Table 2, in %.

    ``run_summary`` and each baseline are tables from :func:`summarize_posteriors` /
    :func:`~aus_lib.baselines.static_cv`; their ``mean`` row gives accuracy (mean over folds),
    the ± (from that accuracy and the total n, as the paper), UAR and F1. When ``selection`` is
    ``"test_fold"`` the run's row carries a note that its figure is optimistic.
    """
    rows = []

    def from_summary(label: str, summary: pd.DataFrame, source: str, note: str) -> dict:
        if "mean" not in summary.index:
            raise ValueError(f"{label}: the summary has no 'mean' row; pass a table from summarize_posteriors() or static_cv().")
        m = summary.loc["mean"]
        n = int(m["n"])
        acc = float(m["accuracy"])
        return {"model": label, "accuracy": 100 * acc, "ci95": 100 * _half_width(acc, n),
                "uar": 100 * float(m["uar"]), "f1": 100 * float(m["f1"]), "n": n, "source": source, "note": note}

    leaky = selection == "test_fold"
    rows.append(from_summary(run_label(selection), run_summary, "this run", TEST_FOLD_NOTE if leaky else LEAK_FREE_NOTE))
    for name, summary in baselines.items():
        rows.append(from_summary(name, summary, "baseline, same folds", ""))
    for model, r in PAPER_RESULTS.iterrows():
        label = model if r["features"] in ("video", "none") else f"{model}, {r['features']}"
        if isinstance(r["normalization"], str):
            label += f", {r['normalization']}"
        # "(paper)" keeps the paper's MLP apart from the same MLP run here on the same folds.
        sequence_model = r["features"] == "AU sequences"
        rows.append({"model": f"{label} (paper{', leaky: test-fold selection' if sequence_model else ''})",
                     "accuracy": r["accuracy"], "ci95": r["ci95"], "uar": np.nan, "f1": np.nan, "n": PAPER_N,
                     "source": "paper", "note": TEST_FOLD_NOTE if sequence_model else
                     "" if r["ci95"] == r["ci95"] else "no ± reported"})
    df = pd.DataFrame(rows).set_index("model")
    df["n"] = df["n"].astype("int64")
    return df


def readable(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """A table for display: rounded, and "–" where a figure was not reported (instead of NaN/<NA>)."""
    shown = table.round(decimals).astype(object)
    return shown.where(table.notna(), "–")


# --- attention ---------------------------------------------------------------------------------

def _clip_weights(att, n_frames: int | None, where: str) -> np.ndarray:
    """One clip's attention as weights summing to 1; a zero tail beyond ``n_frames`` is padding."""
    w = np.asarray(att, dtype=np.float64).ravel()
    if n_frames is not None and w.shape[0] != n_frames:
        if w.shape[0] > n_frames and not np.any(w[n_frames:]):
            w = w[:n_frames]
        else:
            raise ValueError(f"{where}: {w.shape[0]} attention weights for {n_frames} frames; "
                             "pass one weight per frame (longer lists may only be padded with zeros).")
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{where}: attention weights must be finite, non-negative and not all zero.")
    return w / w.sum()


def _frames_array(frames, i: int) -> tuple[np.ndarray, list[str]]:
    """(frames x AUs, AU names) of one clip: a frame table keeps its own AU columns (OpenFace or
    py-feat); a bare array must hold the 35 AU_COLUMNS in order."""
    if isinstance(frames, pd.DataFrame):
        return frames.to_numpy(dtype=np.float64), [str(c) for c in frames.columns]
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(AU_COLUMNS):
        raise ValueError(f"clip {i}: frames must be (n_frames, {len(AU_COLUMNS)}) in AU_COLUMNS order, or a table with "
                         f"named AU columns; got {x.shape}.")
    return x, list(AU_COLUMNS)


def attention_au_importance(frames: Sequence, attentions: Sequence, labels, relative: bool = False) -> pd.DataFrame:
    """Emotion x AU table of attention-weighted AU means.

    For each clip the AU vector is averaged over frames with the clip's attention weights
    (normalised to sum to 1), then these clip vectors are averaged over the clips of each
    emotion, so every clip counts once. With ``relative=True`` the plain (unweighted) per-clip
    frame mean is subtracted first: positive values mark AUs that are stronger in the frames the
    model attends to. Rows in EMOTIONS order (NaN for emotions without clips), columns the clips'
    AU columns (AU_COLUMNS for bare arrays).
    """
    names = emotion_names(labels)
    if not len(frames) == len(attentions) == len(names):
        raise ValueError(f"Got {len(frames)} frame arrays, {len(attentions)} attention arrays and {len(names)} labels; "
                         "pass one of each per clip.")
    rows, columns = [], None
    for i, (x, att) in enumerate(zip(frames, attentions)):
        x, aus = _frames_array(x, i)
        if columns is not None and aus != columns:
            raise ValueError(f"clip {i}: AU columns {aus[:3]}... differ from the first clip's {columns[:3]}...; "
                             "every clip must hold the same AU set.")
        columns = aus
        w = _clip_weights(att, x.shape[0], f"clip {i}")
        v = w @ x
        rows.append(v - x.mean(axis=0) if relative else v)
    columns = columns or list(AU_COLUMNS)
    table = pd.DataFrame(np.array(rows).reshape(len(rows), len(columns)), columns=columns)
    table["emotion"] = names
    out = table.groupby("emotion").mean().reindex(list(EMOTIONS))
    out.index.name = "emotion"
    out.columns.name = "AU"
    return out


def clip_attention_profile(att, bins: int = 20) -> np.ndarray:
    """The share of a clip's attention mass in each of ``bins`` equal parts of its duration.

    Frame t covers the time span [t/T, (t+1)/T) with its weight spread evenly over it, so the
    shares are exact for any clip length (no aliasing when T is not a multiple of ``bins``) and
    sum to 1; uniform attention gives 1/bins everywhere.
    """
    return _profile(_clip_weights(att, None, "attention"), bins)


def _profile(w: np.ndarray, bins: int) -> np.ndarray:
    cum = np.concatenate([[0.0], np.cumsum(w)])
    edges = np.linspace(0.0, w.shape[0], bins + 1)
    return np.diff(np.interp(edges, np.arange(w.shape[0] + 1), cum))


def mean_attention_profile(attentions: Sequence, labels, bins: int = 20) -> pd.DataFrame:
    """Emotion x normalised-time-bin table of attention mass.

    Each clip's weights are normalised to sum to 1 and spread over ``bins`` equal parts of its
    duration (:func:`clip_attention_profile`); a row is the mean of those clip profiles over the
    emotion's clips, so **every row sums to 1** and a flat row equals ``1 / bins``. Rows in
    EMOTIONS order (NaN for emotions without clips), columns the bin centres in [0, 1].
    Attention lists from original files should be read with padding stripped
    (:func:`~aus_lib.posteriors.read_posteriors` does so by default).
    """
    if bins < 1:
        raise ValueError(f"bins = {bins}: use at least one bin.")
    names = emotion_names(labels)
    if len(attentions) != len(names):
        raise ValueError(f"Got {len(attentions)} attention arrays and {len(names)} labels; pass one label per clip.")
    profiles = [_profile(_clip_weights(att, None, f"clip {i}"), bins) for i, att in enumerate(attentions)]
    centres = (np.arange(bins) + 0.5) / bins
    table = pd.DataFrame(np.array(profiles).reshape(len(profiles), bins), columns=centres)
    table["emotion"] = names
    out = table.groupby("emotion").mean().reindex(list(EMOTIONS))
    out.index.name = "emotion"
    out.columns = pd.Index(centres, name="time")
    return out
