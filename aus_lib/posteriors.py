"""Posterior files in the original sequenceLearning format, so fusion code written for them keeps working.

For each fold k of a K-fold run and each partition (``train``, ``val``) the original code wrote four
files named ``{name}-{partition}-{desc}-fold_{k}_outof_{K}.csv``:

* the main file: tab-separated, header ``tag  y  y_hat  posteriors  attentions``; ``tag`` is the
  clip's CSV file name, ``y``/``y_hat`` emotion names, ``posteriors`` the 8 logits as a Python list
  literal in :data:`~aus_lib.ravdess.LABELS` order, ``attentions`` the per-frame attention weights;
* ``...-predictions.csv`` (tag, y_hat), ``...-posteriors.csv`` (tag, posteriors) and
  ``...-featAttention.csv`` (tag, attentions): comma-separated, no header, list literals quoted.

The original wrote each clip's attention padded with zeros to the longest clip of its batch;
this module writes exactly one weight per real frame and, when reading, strips trailing zeros
(``strip_padding=True``) so that both kinds of file give one weight per frame.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aus_lib.ravdess import LABELS, clip_stem, emotion_name
from aus_lib.runs import atomic_path

MAIN_COLUMNS = ("tag", "y", "y_hat", "posteriors", "attentions")
# suffix of each side file -> its two columns
SIDE_FILES = {
    "predictions": ("tag", "y_hat"),
    "posteriors": ("tag", "posteriors"),
    "featAttention": ("tag", "attentions"),
}
_SEPARATORS = re.compile(r"[,\s]+")


class PosteriorFileError(ValueError):
    """A posterior file (or folder of them) that cannot be used."""


class NoPosteriorFiles(PosteriorFileError):
    """A folder that holds no posterior files of the partition asked for."""


# --- names -------------------------------------------------------------------------------------

def posterior_file_name(name: str, partition: str, k: int, K: int, desc: str = "") -> str:
    """The main file's name, e.g. ``RAVDESS_AUs-val--fold_1_outof_5.csv``."""
    if not 1 <= int(k) <= int(K):
        raise ValueError(f"fold k={k} is outside 1..K={K}.")
    return f"{name}-{partition}-{desc}-fold_{int(k)}_outof_{int(K)}.csv"


def side_file_path(main: str | os.PathLike, kind: str) -> Path:
    """The path of a side file (``predictions``, ``posteriors``, ``featAttention``) of a main file."""
    if kind not in SIDE_FILES:
        raise ValueError(f"Unknown side file kind {kind!r}; use one of {sorted(SIDE_FILES)}.")
    main = Path(main)
    return main.with_name(f"{main.stem}-{kind}.csv")


# --- writing -----------------------------------------------------------------------------------

def format_list(values: np.ndarray) -> str:
    """A Python list literal with full float precision (``repr`` of each value as a float64).

    A float32 value converted to float64 is exact, and ``repr`` of a float64 round-trips, so
    reading the text back and casting to float32 gives the original bits.
    """
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _checked_vector(values, what: str, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional; got shape {arr.shape}.")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{what} has {arr.shape[0]} values; expected {length}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values; a posterior file can only hold finite numbers.")
    return arr


def _write_rows(path: Path, rows: list[tuple[str, ...]], delimiter: str, header: Sequence[str] | None) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
            if header is not None:
                writer.writerow(header)
            writer.writerows(rows)
    return path


def write_posteriors(out_dir: str | os.PathLike, name: str, partition: str, k: int, K: int,
                     tags: Sequence[str], y: Sequence, y_hat: Sequence, logits, attentions: Sequence,
                     desc: str = "") -> list[Path]:
    """Write the four posterior files of fold ``k`` (main, predictions, posteriors, featAttention).

    ``tags`` are clip names or paths (written as the clip's CSV file name), ``y``/``y_hat`` emotion
    names or LABELS indices, ``logits`` an (n, 8) array in LABELS order, ``attentions`` one 1-D
    array per clip with exactly one weight per real frame. Returns the four paths, main first.
    """
    tags = list(tags)
    n = len(tags)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape != (n, len(LABELS)):
        raise ValueError(f"logits must have shape ({n}, {len(LABELS)}) (clips x emotions in LABELS order); got {logits.shape}.")
    for what, seq in (("y", y), ("y_hat", y_hat), ("attentions", attentions)):
        if len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries but there are {n} tags; pass one per clip.")
    rows = []
    for i, tag in enumerate(tags):
        file_tag = clip_stem(tag) + ".csv"
        post = format_list(_checked_vector(logits[i], f"logits[{i}] ({file_tag})", len(LABELS)))
        att = _checked_vector(attentions[i], f"attentions[{i}] ({file_tag})")
        rows.append((file_tag, emotion_name(y[i], f"y[{i}]"), emotion_name(y_hat[i], f"y_hat[{i}]"), post, format_list(att)))

    out_dir = Path(out_dir)
    main = out_dir / posterior_file_name(name, partition, k, K, desc)
    paths = [_write_rows(main, rows, "\t", MAIN_COLUMNS)]
    for kind, columns in SIDE_FILES.items():
        idx = [MAIN_COLUMNS.index(c) for c in columns]
        paths.append(_write_rows(side_file_path(main, kind), [tuple(r[j] for j in idx) for r in rows], ",", None))
    return paths


# --- reading -----------------------------------------------------------------------------------

def parse_list(text: str, where: str) -> np.ndarray:
    """A list literal (``[1.0, 2.0]``, also numpy's ``[1. 2.]``) as a float64 array."""
    s = text.strip()
    if not (s.startswith("[") and s.endswith("]")):
        hint = " It looks like a torch tensor repr; write tensor.tolist() instead." if s.startswith("tensor(") else ""
        raise PosteriorFileError(f"{where}: expected a list literal like [0.1, 0.2], got {s[:60]!r}.{hint}")
    inner = s[1:-1].strip()
    if not inner:
        return np.empty(0, dtype=np.float64)
    try:
        return np.array([float(v) for v in _SEPARATORS.split(inner) if v], dtype=np.float64)
    except ValueError as exc:
        raise PosteriorFileError(f"{where}: cannot read the list literal {s[:60]!r}...: {exc}.") from None


def _strip_zero_tail(att: np.ndarray) -> np.ndarray:
    nonzero = np.flatnonzero(att)
    return att[: nonzero[-1] + 1] if nonzero.size else att[:0]


def read_posteriors(path: str | os.PathLike, strip_padding: bool = True) -> pd.DataFrame:
    """Read a main posterior file written by this module or by the original pipeline.

    Returns columns ``tag``, ``clip`` (the stem), ``y``, ``y_hat``, ``posteriors`` (float64 arrays of
    8 logits, LABELS order) and ``attentions`` (float64 arrays). With ``strip_padding`` trailing
    exact zeros are removed from the attentions (the original padded them to the batch's longest
    clip); pass False to get the weights exactly as stored.
    """
    path = Path(path)
    if not path.is_file():
        raise PosteriorFileError(f"{path}: no such posterior file.")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise PosteriorFileError(f"{path}: the file is empty; expected a header {chr(9).join(MAIN_COLUMNS)!r}.")
        header = [h.strip() for h in header]
        missing = [c for c in MAIN_COLUMNS if c not in header]
        if missing:
            side = next((kind for kind in SIDE_FILES if path.stem.endswith(f"-{kind}")), None)
            hint = (f" This is a -{side}.csv side file; pass the main file {path.name.replace(f'-{side}.csv', '.csv')}."
                    if side else " Pass the main file (tab-separated, with a header).")
            raise PosteriorFileError(f"{path}: missing column(s) {missing} in the header {header}.{hint}")
        col = {c: header.index(c) for c in MAIN_COLUMNS}
        records = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise PosteriorFileError(f"{path}, line {line_no}: {len(row)} tab-separated fields, expected {len(header)}.")
            where = f"{path}, line {line_no}"
            rec = {c: row[col[c]] for c in ("tag", "y", "y_hat")}
            for c in ("y", "y_hat"):
                if rec[c] not in LABELS:
                    raise PosteriorFileError(f"{where}: column {c} = {rec[c]!r} is not an emotion ({', '.join(LABELS)}).")
            post = parse_list(row[col["posteriors"]], f"{where}, column posteriors")
            if post.shape[0] != len(LABELS):
                raise PosteriorFileError(f"{where}: posteriors has {post.shape[0]} values; expected {len(LABELS)} (LABELS order).")
            att = parse_list(row[col["attentions"]], f"{where}, column attentions")
            rec["clip"] = clip_stem(rec["tag"])
            rec["posteriors"] = post
            rec["attentions"] = _strip_zero_tail(att) if strip_padding else att
            records.append(rec)
    return pd.DataFrame(records, columns=["tag", "clip", "y", "y_hat", "posteriors", "attentions"])


def find_posterior_files(folder: str | os.PathLike, partition: str = "val") -> dict[int, Path]:
    """Fold k -> main posterior file of ``partition`` in ``folder`` (K inferred from the names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PosteriorFileError(f"{folder}: not a folder; pass the folder that holds a run's posterior files.")
    pattern = re.compile(rf"^.+-{re.escape(partition)}-.*-fold_(\d+)_outof_(\d+)\.csv$")
    by_K: dict[int, dict[int, list[Path]]] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m is None or p.name.startswith(".") or not p.is_file():  # dot files are unfinished atomic writes
            continue
        by_K.setdefault(int(m.group(2)), {}).setdefault(int(m.group(1)), []).append(p)
    if not by_K:
        names = sorted(p.name for p in folder.glob("*.csv"))[:10]
        raise NoPosteriorFiles(
            f"{folder}: no {partition!r} posterior files (...-{partition}-...-fold_k_outof_K.csv); "
            f"CSV files there: {names or 'none'}."
        )
    if len(by_K) > 1:
        detail = "; ".join(f"K={K}: {', '.join(p.name for ps in v.values() for p in ps)}" for K, v in sorted(by_K.items()))
        raise PosteriorFileError(f"{folder}: files of different K are mixed ({detail}). Keep one run per folder.")
    K, found = next(iter(by_K.items()))
    for k, ps in found.items():
        if len(ps) > 1:
            raise PosteriorFileError(
                f"{folder}: {len(ps)} {partition!r} files for fold {k}: {', '.join(p.name for p in ps)}. "
                "Keep one run (one name and description) per folder."
            )
    missing = [k for k in range(1, K + 1) if k not in found]
    if missing:
        raise PosteriorFileError(
            f"{folder}: {partition!r} files for fold(s) {missing} out of {K} are missing; "
            "the run may be unfinished or the files were not all copied."
        )
    extra = sorted(k for k in found if not 1 <= k <= K)
    if extra:
        raise PosteriorFileError(f"{folder}: fold number(s) {extra} are outside 1..{K}.")
    return {k: found[k][0] for k in range(1, K + 1)}


# --- tidy tables -------------------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def to_long_table(df_or_frames: pd.DataFrame | Mapping[int, pd.DataFrame], fold: int | None = None,
                  partition: str = "val") -> pd.DataFrame:
    """One row per clip: ``clip, fold, partition, label, prediction, p_angry .. p_surprise``.

    ``df_or_frames`` is one :func:`read_posteriors` table (give its ``fold``) or a mapping
    fold -> such tables (``fold`` is then taken from the keys). Probabilities are the softmax of
    the stored logits.
    """
    if isinstance(df_or_frames, Mapping):
        if fold is not None:
            raise ValueError("Pass fold only with a single table; a mapping already gives fold -> table.")
        parts = [to_long_table(df, int(k), partition) for k, df in sorted(df_or_frames.items())]
        return pd.concat(parts, ignore_index=True) if parts else _empty_long_table()
    if fold is None:
        raise ValueError("fold is required when passing a single posterior table.")
    df = df_or_frames
    missing = [c for c in ("y", "y_hat", "posteriors") if c not in df.columns]
    if missing:
        raise ValueError(f"The table lacks column(s) {missing}; pass a table from read_posteriors().")
    clips = df["clip"] if "clip" in df.columns else df["tag"].map(clip_stem)
    out = pd.DataFrame({
        "clip": clips.to_numpy(),
        "fold": int(fold),
        "partition": partition,
        "label": df["y"].to_numpy(),
        "prediction": df["y_hat"].to_numpy(),
    })
    if len(df):
        probs = softmax(np.stack(df["posteriors"].to_numpy()))
        for j, emotion in enumerate(LABELS):
            out[f"p_{emotion}"] = probs[:, j]
    else:
        for emotion in LABELS:
            out[f"p_{emotion}"] = pd.Series(dtype=float)
    return out


def _empty_long_table() -> pd.DataFrame:
    return pd.DataFrame(columns=["clip", "fold", "partition", "label", "prediction"] + [f"p_{e}" for e in LABELS])


def find_posterior_files_or_none(folder: str | os.PathLike, partition: str = "val") -> dict[int, Path]:
    """Like :func:`find_posterior_files`, but an empty dict when ``folder`` is missing or holds none
    (other problems, such as mixed K, still raise)."""
    if not Path(folder).is_dir():
        return {}
    try:
        return find_posterior_files(folder, partition)
    except NoPosteriorFiles:
        return {}


def read_run(folder: str | os.PathLike, partition: str = "val", strip_padding: bool = True) -> dict[int, pd.DataFrame]:
    """Fold k -> :func:`read_posteriors` table for every fold of the run in ``folder``."""
    return {k: read_posteriors(p, strip_padding) for k, p in find_posterior_files(folder, partition).items()}
