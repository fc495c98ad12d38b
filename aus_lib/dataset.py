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

from aus_lib import openface, synthetic
from aus_lib.clipfiles import DataError, find_clips
from aus_lib.paths import CACHE_DIR, resolve
from aus_lib.progress import progress_bar
from aus_lib.ravdess import EMOTIONS, LABEL_INDEX, RavdessNameError, parse_name
from aus_lib.runs import atomic_path


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def resolve_aus_dir(aus_dir: str | os.PathLike | None, seed: int = 2020) -> Path:
    """The user's AU folder (or zip), or the built-in synthetic data set (generated on first use)."""
    if aus_dir is None:
        return synthetic.ensure_default(seed=seed)
    return resolve(aus_dir)


def build_manifest(aus_dir: str | os.PathLike, recursive: bool = True, strict: bool = False,
                   progress: bool = True, vocal: str = "speech", parsed: dict | None = None) -> pd.DataFrame:
    """Read and check every clip in ``aus_dir`` (a folder in any subfolder layout, or a zip) up
    front; one row per clip.

    Only clips of the ``vocal`` channel (``"speech"``, ``"song"`` or ``"both"``) are used; the
    others and audio-only files are counted and the count printed (see
    :func:`aus_lib.clipfiles.find_clips`). Every file must be readable, hold one AU set (the 35
    OpenFace columns or py-feat's 20, the same in every file), be numeric and finite, have at
    least 2 frames and carry a RAVDESS name; all problems are gathered and reported together,
    each naming its file; two clips with byte-identical content are refused. ``strict`` turns AU
    range warnings into errors; clips over 10x the median length warn. A ``parsed`` dict receives
    every clip's frames as read here, for ``load_clips(manifest, parsed=parsed)`` not to read them again.
    """
    found = find_clips(aus_dir, vocal=vocal, recursive=recursive)
    if any(found.skipped.values()):  # what was left out; the caller says which data is used
        print(found.summary())
    if not found.files:
        raise DataError(f"No {vocal} clips in {aus_dir}: {found.summary()} Pick another vocal channel.")
    rows, problems = [], []
    seen: dict[str, Path] = {}
    contents: dict[bytes, Path] = {}
    recordings: dict[str, Path] = {}
    formats: dict[str, Path] = {}
    for path in progress_bar(found.files, desc="Checking AU files", unit="clip", disable=not progress, mininterval=2):
        try:
            name = parse_name(path)
        except RavdessNameError as exc:
            problems.append(str(exc))
            continue
        if name.stem in seen:
            problems.append(f"Duplicate clip {name.stem}: {seen[name.stem]} and {path}. Keep one file per clip.")
            continue
        seen[name.stem] = path
        # Full-AV (01) and video-only (02) trials share one video: both would count one recording twice.
        recording = name.stem[3:]
        if recording in recordings:
            problems.append(f"{recordings[recording]} and {path} are the same recording (modalities 01 and 02 share "
                            "the video). Keep one of them.")
            continue
        recordings[recording] = path
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
            if parsed is not None:
                parsed[_file_key(path)] = table.to_numpy(np.float32)
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
            continue
        au_format = next(k for k, cols in openface.AU_SETS.items() if tuple(table.columns) == cols)
        formats.setdefault(au_format, path)
        rows.append({"path": str(path.resolve()), "file": path.name, **name.as_dict(),
                     "intensity_name": name.intensity_name, "label": name.label, "frames": frames,
                     "au_format": au_format})
    if len(formats) > 1:
        problems.insert(0, "Files of different AU formats are mixed: " + ", ".join(
            f"{fmt} (e.g. {path})" for fmt, path in formats.items()) + ". The model takes one AU set; put each "
            "format in its own folder.")
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
    features: np.ndarray   # [clips, max_frames, AU columns], zero after each clip's end
    lengths: np.ndarray    # [clips] int64
    labels: np.ndarray     # [clips] int64, index into ravdess.LABELS
    actors: np.ndarray     # [clips] int64
    columns: tuple[str, ...] = openface.AU_COLUMNS  # what the last axis of features holds

    def __len__(self) -> int:
        return len(self.names)

    def clip(self, i: int) -> np.ndarray:
        return self.features[i, : self.lengths[i]]

    def subset(self, index) -> "ClipData":
        index = np.asarray(index)
        n = int(self.lengths[index].max()) if len(index) else 0
        return ClipData([self.names[i] for i in index], self.features[index, :n], self.lengths[index],
                        self.labels[index], self.actors[index], self.columns)


def _content_key(paths: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        h.update(p.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def au_columns(manifest: pd.DataFrame) -> tuple[str, ...]:
    """The AU columns of the manifest's clips (manifests written before py-feat support are OpenFace)."""
    fmt = manifest["au_format"].iloc[0] if "au_format" in manifest and len(manifest) else "openface"
    return openface.AU_SETS[fmt]


def load_clips(manifest: pd.DataFrame, cache: bool = True, cache_dir: str | os.PathLike | None = None,
               progress: bool = True, parsed: dict | None = None) -> ClipData:
    """Load every clip of the manifest into memory, from the on-disk cache when it is current.

    ``parsed``: the frames :func:`build_manifest` read (its ``parsed`` argument); keyed by path,
    size and modification time, so a file changed since is read again.
    """
    paths = list(manifest["path"])
    cache_file = None
    if cache:
        cache_file = Path(cache_dir or CACHE_DIR) / f"clips-{_content_key(paths)}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                return ClipData(list(z["names"]), z["features"], z["lengths"], z["labels"], z["actors"],
                                au_columns(manifest))
    arrays = []
    for p in progress_bar(paths, desc="Loading AU clips", unit="clip", disable=not progress, mininterval=2):
        known = parsed.get(_file_key(p)) if parsed is not None else None
        arrays.append(known if known is not None else openface.read_aus(p).to_numpy(np.float32))
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    columns = au_columns(manifest)
    features = np.zeros((len(arrays), int(lengths.max()), len(columns)), dtype=np.float32)
    for i, a in enumerate(arrays):
        features[i, : len(a)] = a
    data = ClipData(
        names=list(manifest["clip"]), features=features, lengths=lengths,
        labels=np.array([LABEL_INDEX[e] for e in manifest["emotion"]], dtype=np.int64),
        actors=manifest["actor"].to_numpy(np.int64), columns=columns,
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

    table = pd.crosstab(manifest["fold"], manifest["emotion"]).reindex(columns=list(EMOTIONS), fill_value=0)
    table.loc["total"] = table.sum()
    table["total"] = table.sum(axis=1)
    return table
