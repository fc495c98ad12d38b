"""Static baselines of the paper's Table 2: classifiers on per-clip averaged AUs, actor-disjoint folds.

This follows the original ``staticModels/FeatureTrainingAUs.py``: each clip's 35 AU columns are
averaged over its frames (table ``df_average_AUs_total.csv``), every fold trains a scikit-learn
classifier on the other folds' clips (defaults except the named parameter, ``random_state=2020``),
optionally after a scaler fitted on the training clips only, and is scored on its test actors.
Labels are fitted as RAVDESS emotion codes minus one (neutral = 0 ... surprise = 7), as the
original did, so class order and the MLP's output units match it. Rows keep the table's order;
nothing is shuffled or tuned here.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

from aus_lib import normalize
from aus_lib.analysis import summarize_predictions
from aus_lib.folds import PAPER_FOLDS, check_folds
from aus_lib.openface import AU_COLUMNS, AU_SETS, PROCESSED_SEP, PYFEAT_AU_COLUMNS, read_aus
from aus_lib.ravdess import EMOTIONS, LABELS, RavdessNameError, clip_stem, parse_name
from aus_lib.runs import atomic_path

SEED = 2020
MODELS = ("svc", "knn", "mlp", "logreg")
NORMS = (None, "minmax", "standard")
# Columns after the 35 AUs in the original per-clip average table.
EXTRA_COLUMNS = ("speech", "name", "path", "index")
NAME_COLUMNS = ("name", "clip", "video_name")


# --- the per-clip average table ----------------------------------------------------------------

def average_table(clips: Mapping[str, pd.DataFrame] | str | os.PathLike) -> pd.DataFrame:
    """The per-clip mean of each AU column, in the original table's layout.

    ``clips`` is a mapping clip name -> frame table (with the 35 AU columns) or a folder of AU
    sequences (``*.csv``, processed ``;`` format or raw OpenFace output, read with
    :func:`aus_lib.openface.read_aus` in sorted order). Columns: the 35
    :data:`AU_COLUMNS`, then ``speech``, ``name`` (the clip stem), ``path`` (the stem, as the
    original wrote it) and ``index`` (0). The original table's ``speech`` column is dropped by
    every reader of it and its content cannot be recovered from the AU files, so it is left empty.
    Means skip missing values, as pandas' ``DataFrame.mean`` in the original did.
    """
    if isinstance(clips, (str, os.PathLike)):
        folder = Path(clips)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder of processed AU sequences.")
        files = sorted(folder.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"{folder}: no *.csv AU sequences in this folder.")
        clips = {clip_stem(p): read_aus(p) for p in files}
    rows = []
    for name, frames in clips.items():
        stem = clip_stem(name)
        missing = [c for c in AU_COLUMNS if c not in frames.columns]
        if missing:
            raise ValueError(f"clip {stem}: missing AU column(s) {missing[:6]}{'...' if len(missing) > 6 else ''}; "
                             f"a processed sequence has the 35 AU_COLUMNS.")
        if len(frames) == 0:
            raise ValueError(f"clip {stem}: the sequence has no frames.")
        values = _numeric(frames[list(AU_COLUMNS)])
        counted = np.isfinite(values).sum(axis=0)
        if np.any(counted == 0):
            empty = [c for c, n in zip(AU_COLUMNS, counted) if n == 0]
            raise ValueError(f"clip {stem}: AU column(s) {empty[:6]} have no numeric value in any frame.")
        means = np.where(np.isfinite(values), values, 0.0).sum(axis=0) / counted
        rows.append({**dict(zip(AU_COLUMNS, means)), "speech": np.nan, "name": stem, "path": stem, "index": 0})
    if not rows:
        raise ValueError("No clips given: the average table needs at least one clip.")
    return pd.DataFrame(rows, columns=list(AU_COLUMNS) + list(EXTRA_COLUMNS))


def _numeric(frame: pd.DataFrame) -> np.ndarray:
    """A float64 matrix; values that are not numbers become NaN."""
    try:
        return frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        return frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def write_average_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a per-clip average table as the original did: ``;``-separated, header, no index.

    ``df`` needs the 35 AU columns and a clip-name column (``name`` or ``clip``); missing
    ``speech`` / ``path`` / ``index`` columns are filled as :func:`average_table` does.
    """
    out = df.copy()
    name_col = _name_column(out, "the table")
    missing = [c for c in AU_COLUMNS if c not in out.columns]
    if missing:
        raise ValueError(f"The table lacks AU column(s) {missing[:6]}; it needs all 35 AU_COLUMNS.")
    out["name"] = out[name_col].map(clip_stem)
    if "path" not in out.columns:
        out["path"] = out["name"]
    if "speech" not in out.columns:
        out["speech"] = np.nan
    if "index" not in out.columns:
        out["index"] = 0
    path = Path(path)
    with atomic_path(path) as tmp:
        out[list(AU_COLUMNS) + list(EXTRA_COLUMNS)].to_csv(tmp, sep=PROCESSED_SEP, header=True, index=False)
    return path


def read_average_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-clip average table in the original format (``;``-separated, header)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such average table.")
    df = pd.read_csv(path, sep=PROCESSED_SEP, float_precision="round_trip")
    if len(df.columns) == 1 and "," in df.columns[0]:
        raise ValueError(f"{path}: the table seems comma-separated; the original average table uses ';'.")
    return df


def _name_column(df: pd.DataFrame, where: str) -> str:
    for c in NAME_COLUMNS:
        if c in df.columns:
            return c
    raise ValueError(f"{where} has no clip-name column; add one named 'name' or 'clip' holding the RAVDESS clip names.")


def feature_columns(df: pd.DataFrame, where: str) -> list[str]:
    """The AU set of a per-clip table: the 35 OpenFace columns, or py-feat's 20 AU probabilities."""
    for columns in AU_SETS.values():
        if all(c in df.columns for c in columns):
            return list(columns)
    missing = [c for c in AU_COLUMNS if c not in df.columns]
    raise ValueError(f"{where} lacks AU column(s) {missing[:6]}{'...' if len(missing) > 6 else ''}; it needs all 35 "
                     f"AU_COLUMNS or py-feat's {len(PYFEAT_AU_COLUMNS)} AU columns (per-clip averages).")


def _prepare(table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """clip, actor, code (RAVDESS emotion code - 1) and the AU columns, rows in table order
    (``df.attrs["features"]`` names the AU columns)."""
    where = f"{table}" if isinstance(table, (str, os.PathLike)) else "the table"
    df = read_average_table(table) if isinstance(table, (str, os.PathLike)) else table
    name_col = _name_column(df, where)
    columns = feature_columns(df, where)
    actors, codes = [], []
    for row, name in enumerate(df[name_col]):
        try:
            parsed = parse_name(str(name))
        except RavdessNameError as exc:
            raise ValueError(f"{where}, row {row} ({name_col} = {name!r}): {exc}") from None
        actors.append(parsed.actor)
        codes.append(parsed.emotion_code - 1)
    out = pd.DataFrame({"clip": df[name_col].map(clip_stem).to_numpy(), "actor": actors, "code": codes})
    dup = out["clip"][out["clip"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"{where}: clip(s) {list(dup[:5])} appear more than once; keep one row per clip.")
    features = _numeric(df[columns])
    bad = np.argwhere(~np.isfinite(features))
    if len(bad):
        r, c = bad[0]
        raise ValueError(f"{where}: {len(bad)} missing or non-numeric AU value(s), first at clip {out['clip'][r]}, "
                         f"column {columns[c]}; recompute the averages or drop the clip.")
    out[columns] = features
    out.attrs["features"] = columns
    return out


# --- classifiers -------------------------------------------------------------------------------

def _hidden_layers(param) -> int | tuple[int, ...]:
    value = ast.literal_eval(param) if isinstance(param, str) else param
    if isinstance(value, (list, tuple)):
        value = tuple(value)
        if value and all(isinstance(v, (int, np.integer)) and v > 0 for v in value):
            return tuple(int(v) for v in value)
    elif isinstance(value, (int, np.integer)) and value > 0:
        return int(value)
    raise ValueError(f"mlp param {param!r}: give hidden_layer_sizes as a positive int (80) or a tuple of them ((80, 40)).")


def make_classifier(model: str, param):
    """The scikit-learn estimator for ``model`` with its one parameter (defaults otherwise).

    svc: ``SVC(C=param)``; knn: ``KNeighborsClassifier(n_neighbors=param)``; mlp:
    ``MLPClassifier(hidden_layer_sizes=param)``; logreg: ``LogisticRegression(C=param,
    max_iter=10000)`` (the original raised max_iter so that lbfgs converges). ``random_state=2020``
    where the estimator takes one.
    """
    if model in ("svc", "logreg"):
        try:
            C = float(param)
        except (TypeError, ValueError):
            raise ValueError(f"{model} param {param!r}: give C as a positive number.") from None
        if not C > 0:
            raise ValueError(f"{model} param C = {param!r} must be > 0.")
        if model == "svc":
            return SVC(C=C, random_state=SEED)
        return LogisticRegression(C=C, max_iter=10000, random_state=SEED)
    if model == "knn":
        whole = isinstance(param, (int, np.integer, str)) and not isinstance(param, bool) and str(param).strip().isdigit()
        if not whole or int(param) < 1:
            raise ValueError(f"knn param {param!r}: give n_neighbors as a positive int.")
        return KNeighborsClassifier(n_neighbors=int(param))
    if model == "mlp":
        return MLPClassifier(hidden_layer_sizes=_hidden_layers(param), random_state=SEED)
    raise ValueError(f"Unknown model {model!r}; use one of {', '.join(MODELS)}.")


def _scaler(norm: str | None):
    if norm is None or norm == "none":
        return None
    if norm == "minmax":
        return MinMaxScaler(feature_range=(0, 1))
    if norm == "standard":
        return StandardScaler()
    raise ValueError(f"Unknown norm {norm!r}; use None, 'minmax' or 'standard'.")


def _folds(folds: Mapping[int, tuple[int, ...]] | None, actors: list[int]) -> dict[int, tuple[int, ...]]:
    chosen = PAPER_FOLDS if folds is None else folds
    chosen = {int(k): tuple(int(a) for a in v) for k, v in chosen.items()}
    check_folds(chosen, actors)
    return chosen


# --- cross-validation --------------------------------------------------------------------------

def static_cv_predictions(table: pd.DataFrame | str | os.PathLike, model: str, param, norm: str | None,
                          folds: Mapping[int, tuple[int, ...]] | None = None,
                          actor_normalization: str | None = None) -> pd.DataFrame:
    """Test-fold predictions of every clip: ``clip, actor, fold, label, prediction`` (emotion names).

    ``table``: a per-clip average table (DataFrame with the 35 AU columns and ``name``/``clip``)
    or the path of one in the original ``;`` format. ``folds``: fold -> test actors
    (default: the paper's PAPER_FOLDS); every actor of the table must test in exactly one fold.
    ``actor_normalization`` (``"zscore"``/``"robust"``, :mod:`aus_lib.normalize`): each actor's
    rows rescaled with the statistics of that actor's own rows first (label-free, test actors
    included), before ``norm``'s scaler, which is fitted on the training clips as always.
    """
    data = _prepare(table)
    columns = data.attrs["features"]
    data = normalize.normalize_table(data, columns, data["actor"].to_numpy(), actor_normalization)
    make_classifier(model, param)  # fail on a bad model, param or norm before any fitting
    _scaler(norm)
    chosen = _folds(folds, sorted(data["actor"].unique().tolist()))
    X_all = data[columns].to_numpy(dtype=np.float64)
    y_all = data["code"].to_numpy()
    parts = []
    for k in sorted(chosen):
        test = data["actor"].isin(chosen[k]).to_numpy()
        X_train, X_test = X_all[~test], X_all[test]
        scaler = _scaler(norm)
        if scaler is not None:
            X_train = scaler.fit_transform(X_train)
            X_test = scaler.transform(X_test)
        clf = make_classifier(model, param)
        # One BLAS thread: these matrices are small, and extra threads only contend for the cores.
        with threadpool_limits(1):
            clf.fit(X_train, y_all[~test])
        pred = clf.predict(X_test)
        parts.append(pd.DataFrame({
            "clip": data["clip"].to_numpy()[test],
            "actor": data["actor"].to_numpy()[test],
            "fold": k,
            "label": [EMOTIONS[c] for c in y_all[test]],
            "prediction": [EMOTIONS[int(c)] for c in pred],
        }))
    return pd.concat(parts, ignore_index=True)


def static_cv(table: pd.DataFrame | str | os.PathLike, model: str, param, norm: str | None,
              folds: Mapping[int, tuple[int, ...]] | None = None, actor_normalization: str | None = None) -> pd.DataFrame:
    """Per-fold metrics of a static baseline, like :func:`~aus_lib.analysis.summarize_posteriors`.

    Rows 1..K and ``mean``; columns n, accuracy, precision, recall, f1, uar, ci95 (fractions);
    ``df.attrs["pooled"]`` holds the accuracy over all clips with its 95 % half-width, and
    ``df.attrs["baseline"]`` the model, param and norm. See :func:`static_cv_predictions`.
    """
    summary = summarize_predictions(static_cv_predictions(table, model, param, norm, folds, actor_normalization))
    summary.attrs["baseline"] = {"model": model, "param": param, "norm": norm,
                                 "actor_normalization": actor_normalization}
    return summary


# --- a sequence baseline: MiniRocket -----------------------------------------------------------------

MINIROCKET_ALPHAS = np.logspace(-3, 3, 10)


def resample_clips(data, length: int) -> np.ndarray:
    """Every clip of ``data`` (ClipData) linearly resampled to ``length`` frames: [clips, AUs, length].

    MiniRocket needs equal lengths. Resampling keeps each clip's whole course (onset, apex,
    offset) at the cost of its absolute tempo; zero padding instead would turn the clip length
    into a feature of the padded tail.
    """
    out = np.empty((len(data), data.features.shape[2], length), dtype=np.float64)
    grid = np.linspace(0.0, 1.0, length)
    for i in range(len(data)):
        clip = data.clip(i).astype(np.float64)
        source = np.linspace(0.0, 1.0, len(clip))
        for j in range(clip.shape[1]):
            out[i, j] = np.interp(grid, source, clip[:, j])
    return out


def minirocket_cv_predictions(data, folds: Mapping[int, tuple[int, ...]], actor_normalization: str | None = None,
                              length: int | None = None, n_kernels: int = 10_000, seed: int = SEED) -> pd.DataFrame:
    """MiniRocket features + ridge classifier on the AU sequences; test-fold predictions like
    :func:`static_cv_predictions`.

    ``data``: the raw clips (:class:`aus_lib.dataset.ClipData`); ``folds``: fold -> test actors.
    Clips are first actor-normalized if asked (label-free), then resampled to ``length`` frames
    (default: the median clip length, a label-free property of the data; see
    :func:`resample_clips`). Per fold, MiniRocket (aeon) is fitted on the training clips, its
    features scaled (``StandardScaler(with_mean=False)``, as aeon's MiniRocket classifier does)
    and ``RidgeClassifierCV`` picks its alpha by leave-one-out on the training clips only.
    """
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV

    data = normalize.normalize_data(data, actor_normalization)
    length = int(np.median(data.lengths)) if length is None else int(length)
    if length < 9:
        raise ValueError(f"length={length}: MiniRocket needs clips of at least 9 frames.")
    series = resample_clips(data, length)
    chosen = _folds(folds, sorted(int(a) for a in np.unique(data.actors)))
    labels = np.asarray(data.labels)
    parts = []
    for k in sorted(chosen):
        test = np.isin(data.actors, chosen[k])
        rocket = MiniRocket(n_kernels=n_kernels, random_state=seed)
        with threadpool_limits(1):
            train_features = rocket.fit_transform(series[~test])
            scaler = StandardScaler(with_mean=False).fit(train_features)
            clf = RidgeClassifierCV(alphas=MINIROCKET_ALPHAS).fit(scaler.transform(train_features), labels[~test])
            pred = clf.predict(scaler.transform(rocket.transform(series[test])))
        parts.append(pd.DataFrame({
            "clip": np.asarray(data.names)[test], "actor": np.asarray(data.actors)[test], "fold": k,
            "label": [LABELS[c] for c in labels[test]], "prediction": [LABELS[int(c)] for c in pred],
        }))
    return pd.concat(parts, ignore_index=True)


def minirocket_cv(data, folds: Mapping[int, tuple[int, ...]], actor_normalization: str | None = None,
                  **kwargs) -> pd.DataFrame:
    """Per-fold metrics of :func:`minirocket_cv_predictions`, like :func:`static_cv`."""
    summary = summarize_predictions(minirocket_cv_predictions(data, folds, actor_normalization, **kwargs))
    summary.attrs["baseline"] = {"model": "minirocket", "actor_normalization": actor_normalization}
    return summary
