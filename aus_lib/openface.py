"""Reading OpenFace Action Unit output into tidy pandas tables.

Three on-disk formats are understood:

* the *processed* format the original pipeline stored: ``;``-separated, a header, exactly
  the 35 :data:`AU_COLUMNS`, one row per video frame;
* *raw* OpenFace 2.x output (FeatureExtraction, FaceLandmarkImg, FaceLandmarkVidMulti);
* *py-feat* Detector output (also the FELT release of RAVDESS): 20 AU probabilities
  :data:`PYFEAT_AU_COLUMNS` (``AU01`` ... ``AU43``, no ``_r``/``_c``).

:func:`read_aus` reads the first two into the 35 model columns and py-feat files into its 20; :func:`convert_folder` turns a folder of
raw output into processed files under a frame-quality policy and reports per-clip QC.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from aus_lib.progress import progress_bar
from aus_lib.runs import atomic_path

AU_INTENSITY = (
    "AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU09_r", "AU10_r", "AU12_r",
    "AU14_r", "AU15_r", "AU17_r", "AU20_r", "AU23_r", "AU25_r", "AU26_r", "AU45_r",
)
AU_PRESENCE = (
    "AU01_c", "AU02_c", "AU04_c", "AU05_c", "AU06_c", "AU07_c", "AU09_c", "AU10_c", "AU12_c",
    "AU14_c", "AU15_c", "AU17_c", "AU20_c", "AU23_c", "AU25_c", "AU26_c", "AU28_c", "AU45_c",
)
# The model's input columns, in this order (input_size 35).
AU_COLUMNS = AU_INTENSITY + AU_PRESENCE
# py-feat's AU probabilities (0-1), in its own column order (input_size 20).
PYFEAT_AU_COLUMNS = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43",
)
# The model input of each file format (the processed and raw OpenFace formats share one).
AU_SETS = {"openface": AU_COLUMNS, "pyfeat": PYFEAT_AU_COLUMNS}
# py-feat columns read besides the AUs: its frame counter and face-detection score.
_PYFEAT_KEPT = ("frame", "FaceScore")
PROCESSED_SEP = ";"

PathLike = str | os.PathLike
POLICIES = ("keep_all", "drop_failed")
# OpenFace 2.x clamps intensities to this range and writes presences as 0/1.
INTENSITY_RANGE = (0.0, 5.0)
# FeatureExtraction and FaceLandmarkVidMulti write face_id; FaceLandmarkImg writes face.
_FACE_COLUMNS = ("face_id", "face")
_NAN_SPELLINGS = ["", "nan", "NaN", "NAN", "-nan", "-NaN"]


class AUFileError(ValueError):
    """An AU file that cannot be read as OpenFace output; the message names the file and the fix."""


class AUFileWarning(UserWarning):
    """Something in an AU file worth a look that does not stop reading (extra faces, out-of-range values)."""


@dataclass
class _Table:
    """A parsed CSV: numeric columns with stripped names, and where each data row sits in the file."""

    path: Path
    fmt: str  # "processed", "raw" (OpenFace) or "pyfeat"
    data: pd.DataFrame
    lines: list[int]  # 1-based line number of each data row

    def where(self, row: int) -> str:
        return f"line {self.lines[row]} (data row {row + 1})"


def _load(path: PathLike) -> _Table:
    """Read any AU CSV into numbers, rejecting files that are empty, ragged or non-numeric."""
    path = Path(path)
    if not path.exists():
        raise AUFileError(f"{path}: no such file. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise AUFileError(f"{path} is a folder; pass one CSV file (or use qc_table/convert_folder for folders).")
    if path.stat().st_size == 0:
        raise AUFileError(f"{path} is empty (0 bytes): OpenFace wrote no output. Rerun OpenFace on the clip or remove the file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise AUFileError(f"{path} is not a UTF-8 text CSV ({err}); export it again as plain CSV.") from None
    # Blank lines carry no frame; keeping their numbers lets errors point at the real line.
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise AUFileError(f"{path} holds only blank lines: OpenFace wrote no output. Rerun OpenFace on the clip or remove the file.")
    header = numbered[0][1]
    if PROCESSED_SEP in header:
        fmt, sep = "processed", PROCESSED_SEP
    elif "," in header:
        fmt, sep = "raw", ","
    else:
        raise AUFileError(
            f"{path}: the header line has neither ';' (processed AU format) nor ',' (raw OpenFace output): "
            f"{header[:80]!r}. Pass an OpenFace CSV."
        )
    names = [name.strip() for name in header.split(sep)]
    if fmt == "raw" and "AU01" in names and "AU01_r" not in names:
        fmt = "pyfeat"
        if names[0] == "":
            names[0] = "index"  # pandas writes its row index as an unnamed first column
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise AUFileError(f"{path}: header repeats column(s) {duplicated}; keep one of each.")
    if "" in names:
        raise AUFileError(f"{path}: header has an empty column name at position {names.index('') + 1}; remove the stray '{sep}'.")
    if len(numbered) == 1:
        raise AUFileError(
            f"{path} has a header but no frames: OpenFace found no face in the clip. Drop the clip or rerun OpenFace on it."
        )
    for lineno, line in numbered[1:]:
        n = line.count(sep) + 1
        if n != len(names):
            raise AUFileError(
                f"{path}: line {lineno} has {n} fields but the header has {len(names)}; "
                f"the row is truncated or has stray separators: fix or delete it."
            )
    body = "\n".join(line for _, line in numbered)
    # Only empty fields and NaN spellings mean "missing"; pandas' other markers ("n/a", "null", ...)
    # are reported as non-numeric text so the user sees what is really in the file.
    data = pd.read_csv(
        io.StringIO(body), sep=sep, skipinitialspace=True, index_col=False, header=0,
        keep_default_na=False, na_values=_NAN_SPELLINGS,
    )
    data.columns = names
    table = _Table(path, fmt, data, [lineno for lineno, _ in numbered[1:]])
    if fmt == "pyfeat":
        # Emotion scores, landmarks and the `input` path are not model input; only these must be numbers.
        table.data = data = data.loc[:, [c for c in data.columns if c in PYFEAT_AU_COLUMNS or c in _PYFEAT_KEPT]].copy()
    for col, dtype in data.dtypes.items():
        if not is_numeric_dtype(dtype) or is_bool_dtype(dtype):
            data[col] = _to_number(table, col)
    return table


def _to_number(table: _Table, col: str) -> pd.Series:
    raw = table.data[col]
    stripped = raw.astype("string").str.strip()
    numbers = pd.to_numeric(stripped, errors="coerce")
    bad = np.flatnonzero((numbers.isna() & raw.notna()).to_numpy())
    if len(bad):
        row = int(bad[0])
        more = f" ({len(bad) - 1} more in this column)" if len(bad) > 1 else ""
        raise AUFileError(
            f"{table.path}: non-numeric value {raw.iloc[row]!r} at {table.where(row)}, column {col!r}{more}. "
            f"OpenFace writes numbers only: fix or delete the row."
        )
    return numbers.astype("float64")


def _check_finite(table: _Table, frame: pd.DataFrame, values: np.ndarray | None = None) -> None:
    """NaN and inf have no place in OpenFace output; name the first one."""
    values = frame.to_numpy(dtype="float64") if values is None else values
    for kind, mask in (("missing (empty or NaN)", np.isnan(values)), ("infinite", np.isinf(values))):
        if mask.any():
            r, c = np.argwhere(mask)[0]
            raise AUFileError(
                f"{table.path}: {kind} value at {table.where(int(frame.index[r]))}, column {frame.columns[c]!r} "
                f"({int(mask.sum())} such cell(s) in all). OpenFace writes 0 for lost frames, so the file was edited "
                f"or cut off: fill or delete those rows, or rerun OpenFace on the clip."
            )


def _require_aus(table: _Table) -> None:
    missing = [c for c in AU_COLUMNS if c not in table.data.columns]
    if missing:
        hint = (
            "Rerun OpenFace with AU output (FeatureExtraction -aus, or without output-selection flags)."
            if table.fmt == "raw" else "Write the file again with write_aus from a table holding all 35 AU columns."
        )
        raise AUFileError(f"{table.path} lacks {len(missing)} AU column(s): {', '.join(missing)}. {hint}")


def _processed_aus(table: _Table) -> pd.DataFrame:
    """The 35 AU columns of a processed file, which must hold exactly those columns."""
    extra = [c for c in table.data.columns if c not in AU_COLUMNS]
    if extra:
        raise AUFileError(
            f"{table.path}: the processed ';' format holds exactly the 35 AU columns, but it also has {', '.join(extra)}. "
            f"Delete those columns, or save the table as raw ',' OpenFace output instead."
        )
    _require_aus(table)
    if tuple(table.data.columns) != AU_COLUMNS:
        warnings.warn(
            f"{table.path}: AU columns are not in the model order; reordered them to AU_COLUMNS "
            f"(rewrite the file with write_aus to silence this).",
            AUFileWarning, stacklevel=3,
        )
    return table.data.loc[:, list(AU_COLUMNS)]


def _face_column(data: pd.DataFrame) -> str | None:
    return next((c for c in _FACE_COLUMNS if c in data.columns), None)


def _pick_face(table: _Table) -> tuple[pd.DataFrame, dict]:
    """Rows of the one face to keep: the track with the highest mean confidence (then the most rows)."""
    data = table.data
    face_col = _face_column(data)
    used = [c for c in (face_col, "confidence", "success") if c is not None and c in data.columns]
    _check_finite(table, data[used])
    info = {"faces": 1, "face_kept": np.nan, "dropped_other_faces": 0}
    if face_col is None:
        return data, info
    faces = data.groupby(face_col, sort=True)
    score = pd.DataFrame({
        "confidence": faces["confidence"].mean() if "confidence" in data.columns else 0.0,
        "rows": faces.size(),
    })
    # Sorting keeps ties deterministic: the lowest face id wins.
    kept = score.sort_values(["confidence", "rows"], ascending=False, kind="stable").index[0]
    rows = data[data[face_col] == kept]
    info.update(faces=len(score), face_kept=kept, dropped_other_faces=len(data) - len(rows))
    if len(score) > 1:
        others = ", ".join(f"{face_id:g} ({score.loc[face_id, 'confidence']:.3f})" for face_id in score.index if face_id != kept)
        warnings.warn(
            f"{table.path}: {len(score)} faces; kept {face_col} {kept:g} (mean confidence "
            f"{score.loc[kept, 'confidence']:.3f}, {len(rows)} rows) and dropped {info['dropped_other_faces']} rows of "
            f"{face_col} {others}.",
            AUFileWarning, stacklevel=3,
        )
    return rows, info


def _order_frames(table: _Table, rows: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The kept face's rows in ``frame`` order, and how many frame numbers are missing between its
    first and last frame (NaN without a ``frame`` column). A frame given twice is an error: two
    different AU rows cannot both be that moment of the clip."""
    if "frame" not in rows.columns:
        return rows, np.nan
    frames = rows["frame"]
    twice = frames[frames.duplicated(keep=False)]
    if len(twice):
        first = twice.iloc[0]
        lines = ", ".join(str(table.lines[i]) for i in frames.index[frames == first])
        raise AUFileError(f"{table.path}: frame {first:g} appears {int((frames == first).sum())} times for the same "
                          f"face (lines {lines}; {twice.nunique()} frame number(s) repeated in all). OpenFace writes each "
                          "frame once per face: the file was concatenated or edited. Keep one row per frame, or rerun "
                          "OpenFace on the clip.")
    missing = float(frames.max() - frames.min() + 1 - len(frames)) if len(frames) else 0.0
    return rows.sort_values("frame", kind="stable"), missing


def _raw_face_rows(table: _Table) -> tuple[pd.DataFrame, dict]:
    """The rows of the face to keep from a raw file, in frame order, and their QC info; a file
    in which OpenFace never tracked a face (no ``success`` 1) is refused."""
    _require_aus(table)
    rows, info = _pick_face(table)
    if "success" in table.data.columns and not (table.data["success"] == 1).any():
        raise AUFileError(f"{table.path}: no frame has success 1: OpenFace tracked no face in any of its "
                          f"{len(table.data)} frames, so its AU values are meaningless. Drop the clip, or rerun "
                          "OpenFace on it.")
    rows, info["missing_frames"] = _order_frames(table, rows)
    return rows, info


def _check_values(table: _Table, aus: pd.DataFrame, strict: bool) -> pd.DataFrame:
    """Check the AU block of ``table`` and return it as float64 with a RangeIndex."""
    values = aus.to_numpy(dtype="float64")
    _check_finite(table, aus, values)
    lo, hi = INTENSITY_RANGE
    n_int = len(AU_INTENSITY)
    intensity, presence = values[:, :n_int], values[:, n_int:]
    bad = np.concatenate([(intensity < lo) | (intensity > hi), (presence != 0) & (presence != 1)], axis=1)
    problems = []
    for c in np.flatnonzero(bad.any(axis=0)):
        rows = np.flatnonzero(bad[:, c])
        rule = f"outside [{lo:g}, {hi:g}]" if c < n_int else "not 0 or 1"
        where = table.where(int(aus.index[rows[0]]))
        problems.append(f"{AU_COLUMNS[c]} {rule} in {len(rows)} row(s), first {values[rows[0], c]:g} at {where}")
    if problems:
        message = (
            f"{table.path}: AU values out of range: {'; '.join(problems)}. OpenFace intensities lie in [0, 5] and "
            f"presences are 0 or 1: check that the columns are not shifted, scaled or swapped."
        )
        if strict:
            raise AUFileError(message)
        warnings.warn(message + " (strict=True makes this an error.)", AUFileWarning, stacklevel=3)
    return pd.DataFrame(values, columns=list(AU_COLUMNS))


def _check_length(table: _Table, n: int, min_frames: int, fix: str) -> None:
    if n < min_frames:
        raise AUFileError(f"{table.path} has {n} frame(s), fewer than min_frames={min_frames}. {fix}")


def read_openface_raw(path: PathLike) -> pd.DataFrame:
    """Raw OpenFace 2.x output (FeatureExtraction, FaceLandmarkVidMulti, FaceLandmarkImg) as a
    numeric table with stripped column names and a RangeIndex: every row and column of the file,
    pose, gaze and landmarks included."""
    table = _load(path)
    if table.fmt != "raw":
        raise AUFileError(f"{table.path} is in the processed ';' AU format, not raw OpenFace output; read it with read_aus.")
    return table.data


def read_aus(path: PathLike, strict: bool = False, min_frames: int = 2) -> pd.DataFrame:
    """The 35 :data:`AU_COLUMNS` of one clip, one float64 row per frame, in file order.

    Reads the processed ``;`` format and raw OpenFace output alike (detected from the header).
    Raw files keep every frame, failed ones included, as the original pipeline did, sorted by their
    ``frame`` number (a frame given twice, or a file without any ``success`` 1 frame, is refused);
    with several faces only the face with the highest mean confidence is kept (with an
    :class:`AUFileWarning`).
    Out-of-range AU values warn, or raise with ``strict=True``. Pass ``min_frames=1`` for
    single images (FaceLandmarkImg output).
    """
    table = _load(path)
    if table.fmt == "pyfeat":
        aus, _ = _pyfeat_aus(table, strict)
    elif table.fmt == "processed":
        aus = _check_values(table, _processed_aus(table), strict)
    else:
        rows, _ = _raw_face_rows(table)
        aus = _check_values(table, rows.loc[:, list(AU_COLUMNS)], strict)
    _check_length(table, len(aus), min_frames, "Drop the clip, or pass min_frames=1 to accept single images.")
    return aus


def au_format(path: PathLike) -> str:
    """``"openface"`` (processed or raw OpenFace) or ``"pyfeat"``: which AU set a file holds,
    from its header line alone."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        header = next((line for line in handle if line.strip()), "")
    names = {name.strip() for name in header.replace(PROCESSED_SEP, ",").split(",")}
    return "pyfeat" if "AU01" in names and "AU01_r" not in names else "openface"


def _pyfeat_aus(table: _Table, strict: bool) -> tuple[pd.DataFrame, dict]:
    """The 20 AU probabilities of a py-feat file, one row per frame, and QC facts.

    py-feat writes one row per detected face: with several faces in a frame the one with the
    highest ``FaceScore`` is kept; frames without a face (all AUs empty) become zeros, as
    OpenFace writes lost frames, and are counted as ``failed_frames``.
    """
    data = table.data
    missing = [c for c in PYFEAT_AU_COLUMNS if c not in data.columns]
    if missing:
        raise AUFileError(f"{table.path} is py-feat output but lacks AU column(s) {', '.join(missing)}; "
                          "write the Detector's full output (all 20 AUs).")
    faces_per_frame = 1
    if "frame" in data.columns and data["frame"].duplicated().any():
        faces_per_frame = int(data["frame"].value_counts().max())
        score = data["FaceScore"].fillna(-1.0) if "FaceScore" in data.columns else pd.Series(0.0, index=data.index)
        order = data.assign(_score=score).sort_values(["frame", "_score"], ascending=[True, False], kind="stable")
        data = order.drop_duplicates("frame").drop(columns="_score")
        warnings.warn(f"{table.path}: up to {faces_per_frame} faces per frame; kept the face with the highest "
                      "FaceScore in each frame.", AUFileWarning, stacklevel=3)
    aus = data.loc[:, list(PYFEAT_AU_COLUMNS)]
    lost = aus.isna().all(axis=1)
    aus = aus.where(~lost, 0.0)
    _check_finite(table, aus)
    values = aus.to_numpy(dtype="float64")
    bad = (values < 0) | (values > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        message = (f"{table.path}: py-feat AU probabilities lie in [0, 1], but {int(bad.sum())} value(s) do not, first "
                   f"{values[r, c]:g} at {table.where(int(aus.index[r]))}, column {PYFEAT_AU_COLUMNS[c]}.")
        if strict:
            raise AUFileError(message)
        warnings.warn(message + " (strict=True makes this an error.)", AUFileWarning, stacklevel=3)
    info = {"faces": faces_per_frame, "failed_frames": float(lost.sum()),
            "mean_confidence": float(data["FaceScore"].mean()) if "FaceScore" in data.columns else np.nan}
    return pd.DataFrame(values, columns=list(PYFEAT_AU_COLUMNS)), info


def _exists_error(paths: list[Path]) -> AUFileError:
    shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return AUFileError(f"refusing to overwrite existing file(s) {shown}; delete them or pass overwrite=True.")


def write_aus(df: pd.DataFrame, path: PathLike, overwrite: bool = False) -> Path:
    """Write a 35-AU table in the processed ``;`` format (columns in :data:`AU_COLUMNS` order),
    atomically; an existing file is kept unless ``overwrite=True``. Returns the path written."""
    path = Path(path)
    missing = [c for c in AU_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in AU_COLUMNS]
    if missing or extra:
        raise ValueError(
            f"write_aus({path}): the table must hold exactly the 35 AU columns"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(map(str, extra))} (select df[list(AU_COLUMNS)] first)" if extra else "")
        )
    aus = df.loc[:, list(AU_COLUMNS)].astype("float64")
    if not np.isfinite(aus.to_numpy()).all():
        raise ValueError(f"write_aus({path}): the table holds NaN or infinite values; fill or drop those rows first.")
    if path.exists() and not overwrite:
        raise _exists_error([path])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        aus.to_csv(tmp, sep=PROCESSED_SEP, index=False, lineterminator="\n")
    return path


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        one = Path(paths)
        return sorted(p for p in one.iterdir() if p.suffix.lower() == ".csv") if one.is_dir() else [one]
    return [Path(p) for p in paths]


def _quality(rows: pd.DataFrame) -> dict:
    return {
        "failed_frames": float((rows["success"] == 0).sum()) if "success" in rows.columns else np.nan,
        "mean_confidence": float(rows["confidence"].mean()) if "confidence" in rows.columns else np.nan,
    }


def qc_table(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """One row per AU file (a folder means its CSV files): clip, source, format, frames (as
    :func:`read_aus` returns them), faces, face_kept, failed_frames (``success`` 0),
    mean_confidence and missing_frames (gaps in its ``frame`` numbers) of the kept face; NaN where
    the format does not record it."""
    records = []
    for path in _as_paths(paths):
        table = _load(path)
        record = {"clip": path.stem, "source": str(path), "format": table.fmt}
        if table.fmt == "pyfeat":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AUFileWarning)
                aus, info = _pyfeat_aus(table, strict=False)
            record.update(frames=len(aus), faces=info["faces"], face_kept=np.nan, failed_frames=info["failed_frames"],
                          mean_confidence=info["mean_confidence"])
        elif table.fmt == "processed":
            aus = _processed_aus(table)
            record.update(frames=len(aus), faces=np.nan, face_kept=np.nan, failed_frames=np.nan, mean_confidence=np.nan,
                          missing_frames=np.nan)
        else:
            with warnings.catch_warnings():
                # The table itself reports the faces, so the per-file warning would only repeat it.
                warnings.simplefilter("ignore", AUFileWarning)
                rows, info = _raw_face_rows(table)
            record.update(frames=len(rows), faces=info["faces"], face_kept=info["face_kept"], **_quality(rows),
                          missing_frames=info["missing_frames"])
        records.append(record)
    columns = ["clip", "source", "format", "frames", "faces", "face_kept", "failed_frames", "mean_confidence",
               "missing_frames"]
    return pd.DataFrame.from_records(records, columns=columns)


def qc_summary(qc: pd.DataFrame) -> pd.DataFrame:
    """Per-column summary (count, mean, min, max, ...) of a :func:`qc_table`, leaving out what the
    files' format does not record (the processed format keeps no faces, success or confidence),
    so no row is all NaN; ``frames_lost`` counts frames with ``success`` 0 (py-feat: no face)."""
    numeric = qc.drop(columns=["clip", "source", "format"]).dropna(axis=1, how="all").astype("float64")
    numeric = numeric.rename(columns={"failed_frames": "frames_lost"})
    return numeric.describe().T


def _apply_policy(table: _Table, rows: pd.DataFrame, policy: str, min_confidence: float) -> pd.DataFrame:
    if policy == "keep_all":
        return rows
    if "success" not in rows.columns and "confidence" not in rows.columns:
        raise AUFileError(
            f"{table.path} has no 'success' or 'confidence' column, so policy='drop_failed' cannot judge frames; "
            f"use policy='keep_all'."
        )
    keep = pd.Series(True, index=rows.index)
    if "success" in rows.columns:
        keep &= rows["success"] != 0
    if "confidence" in rows.columns:
        keep &= rows["confidence"] >= min_confidence
    return rows[keep]


def convert_folder(
    raw_dir: PathLike,
    out_dir: PathLike,
    policy: str = "keep_all",
    min_confidence: float = 0.0,
    overwrite: bool = False,
    *,
    min_frames: int = 2,
    strict: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Convert every raw OpenFace CSV in ``raw_dir`` into a processed 35-AU file of the same name in
    ``out_dir`` and return a per-clip QC table.

    ``policy="keep_all"`` keeps every frame (the original pipeline); ``"drop_failed"`` drops frames
    with ``success`` 0 or ``confidence`` below ``min_confidence``. With several faces the face with
    the highest mean confidence is kept. Every file is read and checked before any is written, and
    existing outputs are kept unless ``overwrite=True``.

    QC columns: clip, source, output, frames_in (rows in the raw file, all faces), frames_out (rows
    written), failed_frames (``success`` 0) and mean_confidence of the kept face before the policy,
    faces, face_kept, dropped_other_faces, missing_frames (gaps in the kept face's ``frame``
    numbers), policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {POLICIES}.")
    if not 0.0 <= min_confidence <= 1.0:  # also rejects NaN
        raise ValueError(f"min_confidence={min_confidence} must lie in [0, 1] (OpenFace confidences do).")
    if policy == "keep_all" and min_confidence > 0:
        raise ValueError(f"min_confidence={min_confidence} only applies with policy='drop_failed'; keep_all keeps every frame.")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise AUFileError(f"{raw_dir}: no such folder of raw OpenFace CSV files.")
    if out_dir.exists() and out_dir.resolve() == raw_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is raw_dir; pick another folder so the raw files are kept.")
    sources = sorted(p for p in raw_dir.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not sources:
        raise AUFileError(f"{raw_dir} holds no .csv files; point raw_dir at OpenFace's output folder.")
    targets = [out_dir / p.name for p in sources]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise _exists_error(existing)

    converted, records = [], []
    for source in progress_bar(sources, desc="OpenFace -> AUs", unit="clip", disable=not progress):
        table = _load(source)
        if table.fmt == "pyfeat":
            raise AUFileError(f"{source} is py-feat output; it needs no conversion: point aus_dir at its folder directly.")
        if table.fmt != "raw":
            raise AUFileError(
                f"{source} is already in the processed ';' format; convert_folder only converts raw OpenFace output "
                f"(move that file out of {raw_dir} or copy it to {out_dir} as it is)."
            )
        rows, info = _raw_face_rows(table)
        kept = _apply_policy(table, rows, policy, min_confidence)
        aus = kept.loc[:, list(AU_COLUMNS)]
        aus = _check_values(table, aus, strict)
        fix = ("Use policy='keep_all' or a lower min_confidence." if len(kept) < len(rows)
               else "Remove the clip from raw_dir, or pass min_frames=1 for single images.")
        _check_length(table, len(aus), min_frames, fix)
        converted.append(aus)
        records.append({
            "clip": source.stem, "source": str(source), "frames_in": len(table.data), "frames_out": len(aus),
            **_quality(rows), "faces": info["faces"], "face_kept": info["face_kept"],
            "dropped_other_faces": info["dropped_other_faces"], "missing_frames": info["missing_frames"],
            "policy": policy,
        })

    out_dir.mkdir(parents=True, exist_ok=True)
    for aus, target in zip(converted, targets):
        write_aus(aus, target, overwrite=overwrite)
    qc = pd.DataFrame.from_records(records)
    qc.insert(2, "output", [str(t) for t in targets])
    return qc
