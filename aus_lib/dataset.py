"""A folder of per-clip AU files → a validated manifest → in-memory tensors (cached on disk).

The manifest is the tidy table every later stage reads: one row per clip with its path,
parsed RAVDESS fields, label and number of frames. Clips are read once; the padded float32
array is cached under :data:`aus_lib.paths.CACHE_DIR`, keyed by the files' contents, so a
changed file invalidates the cache and no CSV is read during training.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aus_lib import openface
from aus_lib.paths import CACHE_DIR, resolve
from aus_lib.ravdess import LABEL_INDEX, RavdessNameError, parse_name
from aus_lib.runs import atomic_path


# Clips parsed while a folder was validated, reused by load_clips in the same process: keyed by
# (path, size, mtime_ns), so a file changed in between is read again.
_PARSED: dict[tuple[str, int, int], np.ndarray] = {}


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


class DataError(ValueError):
    """A data folder that cannot be used; the message lists every bad file."""


def resolve_aus_dir(aus_dir: str | os.PathLike | None, seed: int = 2020) -> Path:
    """The user's AU folder, or the built-in synthetic data set (generated on first use)."""
    if aus_dir is None:
        from aus_lib import synthetic

        return synthetic.ensure_default(seed=seed)
    return resolve(aus_dir)


def find_clip_files(aus_dir: str | os.PathLike, recursive: bool = False) -> list[Path]:
    folder = Path(aus_dir)
    if not folder.is_dir():
        raise DataError(f"AU folder {folder} does not exist. Point aus_dir at a folder of per-clip OpenFace CSVs, "
                        "or set it to None to use the built-in synthetic data set.")
    files = sorted((folder.rglob if recursive else folder.glob)("*.csv"))
    files = [f for f in files if not f.name.startswith(".")]
    if not files:
        raise DataError(f"AU folder {folder} holds no .csv files. Expected one OpenFace CSV per clip named after the "
                        "clip, e.g. 01-01-03-02-01-01-12.csv" + ("" if recursive else " (use recursive=True for subfolders)."))
    return files


def build_manifest(aus_dir: str | os.PathLike, recursive: bool = False, strict: bool = False,
                   progress: bool = True) -> pd.DataFrame:
    """Read and check every clip in ``aus_dir`` up front; one row per clip.

    Every file must be readable, hold the 35 AU columns, be numeric and finite, have at
    least 2 frames, carry a RAVDESS name and differ from every other clip's bytes; all problems are
    gathered and reported together, each naming its file. ``strict`` turns AU range warnings into
    errors; clips over 10x the median length warn.
    """
    files = find_clip_files(aus_dir, recursive)
    rows, problems = [], []
    seen: dict[str, Path] = {}
    contents: dict[bytes, Path] = {}
    for path in tqdm(files, desc="Checking AU files", unit="clip", disable=not progress, mininterval=2):
        try:
            name = parse_name(path)
        except RavdessNameError as exc:
            problems.append(str(exc))
            continue
        if name.stem in seen:
            problems.append(f"Duplicate clip {name.stem}: {seen[name.stem]} and {path}. Keep one file per clip.")
            continue
        seen[name.stem] = path
        # Two clips cannot be the same bytes: one is a copy saved under the wrong name.
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
        if digest in contents:
            problems.append(f"{contents[digest]} and {path} have byte-identical content: one of them is a copy "
                            "saved under the wrong clip name. Keep the right one and remove the other.")
            continue
        contents[digest] = path
        try:
            table = openface.read_aus(path, strict=strict, min_frames=2)
            frames = len(table)
            _PARSED[_file_key(path)] = table.to_numpy(np.float32)
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
            continue
        rows.append({"path": str(path.resolve()), "file": path.name, **name.as_dict(),
                     "intensity_name": name.intensity_name, "label": name.label, "frames": frames})
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} problem(s) in AU folder {aus_dir}:\n  - {shown}{more}")
    manifest = pd.DataFrame(rows).sort_values(["actor", "clip"]).reset_index(drop=True)
    _warn_long_clips(manifest)
    return manifest


LONG_CLIP_FACTOR = 10  # RAVDESS clips last 3-5 s; ten times the median is another recording


def _warn_long_clips(manifest: pd.DataFrame) -> None:
    limit = LONG_CLIP_FACTOR * manifest["frames"].median()
    long = manifest[manifest["frames"] > limit]
    if len(long):
        shown = ", ".join(f"{r.file} ({r.frames} frames)" for r in long.head(5).itertuples())
        warnings.warn(f"{len(long)} clip(s) are over {LONG_CLIP_FACTOR}x the median length "
                      f"({manifest['frames'].median():g} frames): {shown}{' ...' if len(long) > 5 else ''}. RAVDESS "
                      "clips last a few seconds: check that these files hold one clip each.",
                      openface.AUFileWarning, stacklevel=3)


def describe_data(manifest: pd.DataFrame) -> str:
    """Which data a manifest holds, in one line; loudly when it is the synthetic set."""
    from aus_lib import synthetic

    folders = sorted({str(Path(p).parent) for p in manifest["path"]})
    folder = os.path.commonpath(folders) if folders else "?"
    size = f"{len(manifest)} clips of {manifest['actor'].nunique()} actors from {folder}"
    if all((Path(f) / synthetic.MARKER).is_file() for f in folders):
        return f"SYNTHETIC (the built-in RAVDESS-like set, not real recordings): {size}"
    return size


# --- tensors ---------------------------------------------------------------------------------

@dataclass
class ClipData:
    """All clips as one zero-padded float32 array, in manifest order."""

    names: list[str]
    features: np.ndarray   # [clips, max_frames, 35], zero after each clip's end
    lengths: np.ndarray    # [clips] int64
    labels: np.ndarray     # [clips] int64, index into ravdess.LABELS
    actors: np.ndarray     # [clips] int64

    def __len__(self) -> int:
        return len(self.names)

    def clip(self, i: int) -> np.ndarray:
        return self.features[i, : self.lengths[i]]

    def subset(self, index) -> "ClipData":
        index = np.asarray(index)
        n = int(self.lengths[index].max()) if len(index) else 0
        return ClipData([self.names[i] for i in index], self.features[index, :n], self.lengths[index],
                        self.labels[index], self.actors[index])


def _content_key(paths: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        h.update(p.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def load_clips(manifest: pd.DataFrame, cache: bool = True, cache_dir: str | os.PathLike | None = None,
               progress: bool = True) -> ClipData:
    """Load every clip of the manifest into memory, from the on-disk cache when it is current."""
    paths = list(manifest["path"])
    cache_file = None
    if cache:
        cache_file = Path(cache_dir or CACHE_DIR) / f"clips-{_content_key(paths)}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                return ClipData(list(z["names"]), z["features"], z["lengths"], z["labels"], z["actors"])
    arrays = []
    for p in tqdm(paths, desc="Loading AU clips", unit="clip", disable=not progress, mininterval=2):
        parsed = _PARSED.pop(_file_key(p), None)
        arrays.append(parsed if parsed is not None else openface.read_aus(p).to_numpy(np.float32))
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    features = np.zeros((len(arrays), int(lengths.max()), len(openface.AU_COLUMNS)), dtype=np.float32)
    for i, a in enumerate(arrays):
        features[i, : len(a)] = a
    data = ClipData(
        names=list(manifest["clip"]), features=features, lengths=lengths,
        labels=np.array([LABEL_INDEX[e] for e in manifest["emotion"]], dtype=np.int64),
        actors=manifest["actor"].to_numpy(np.int64),
    )
    if cache_file is not None:
        try:
            with atomic_path(cache_file) as tmp:
                np.savez(tmp, names=np.array(data.names), features=features, lengths=lengths,
                         labels=data.labels, actors=data.actors)
        except OSError:
            pass  # a cache that cannot be written only costs time next run
    return data


def clips_per_fold_emotion(manifest: pd.DataFrame) -> pd.DataFrame:
    """Fold × emotion clip counts (emotions in display order)."""
    from aus_lib.ravdess import EMOTIONS

    table = pd.crosstab(manifest["fold"], manifest["emotion"]).reindex(columns=list(EMOTIONS), fill_value=0)
    table.loc["total"] = table.sum()
    table["total"] = table.sum(axis=1)
    return table
