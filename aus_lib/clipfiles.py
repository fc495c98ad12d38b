"""Finding the per-clip AU files: a folder in any subfolder layout, or a zip file as published.

The RAVDESS authors' OpenFace release (``FacialTracking_Actors_01-24.zip``, Zenodo 3255102)
holds speech and song trials side by side in ``Actor_XX/`` folders. :func:`find_clips` picks
the CSV files (any letter case of ``.csv``) of the wanted vocal channel and leaves out
audio-only trials (modality 03 has no video, so no AU file can belong to it), counting every
file it leaves out so the user sees what was skipped. Members of a zip are extracted once,
only those selected, into the tensor cache folder; the zip itself is never changed.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aus_lib import paths
from aus_lib.runs import atomic_path
from aus_lib.ravdess import MODALITY, VOCAL_CHANNEL, RavdessNameError, parse_name

VOCAL_CHOICES = ("speech", "song", "both")
_AUDIO_ONLY = next(code for code, name in MODALITY.items() if name == "audio-only")


class DataError(ValueError):
    """A data folder that cannot be used; the message lists every bad file."""


@dataclass
class ClipFiles:
    """The AU files selected from ``source`` and how many were left out, by reason."""

    source: Path
    files: list[Path]
    vocal: str
    skipped: dict[str, int] = field(default_factory=dict)
    extracted_to: Path | None = None

    def summary(self) -> str:
        where = f"{self.source}" + (f" (extracted to {self.extracted_to})" if self.extracted_to else "")
        parts = [f"{len(self.files)} AU file(s) used from {where}"]
        parts += [f"{n} {reason} skipped" for reason, n in self.skipped.items() if n]
        hint = " (vocal='both' or 'song' uses song clips)" if self.skipped.get("song clip(s)") else ""
        return ", ".join(parts) + f"; vocal={self.vocal!r}{hint}."


def _is_candidate(parts: tuple[str, ...]) -> bool:
    """A CSV file in any letter case, not hidden and not in a hidden or macOS metadata folder."""
    return (parts[-1].lower().endswith(".csv")
            and not any(p.startswith(".") or p == "__MACOSX" for p in parts))


def _select(names: list[str], vocal: str) -> tuple[list[str], dict[str, int]]:
    """The names to use, and counts of those left out. Names that are not RAVDESS names are kept
    so that the manifest check reports them with the fix."""
    wanted = {"speech": {1}, "song": {2}, "both": {1, 2}}[vocal]
    skipped = {"song clip(s)": 0, "speech clip(s)": 0, "audio-only (modality 03) file(s)": 0}
    kept = []
    for name in names:
        try:
            clip = parse_name(name)
        except RavdessNameError:
            kept.append(name)
            continue
        if clip.modality == _AUDIO_ONLY:
            skipped["audio-only (modality 03) file(s)"] += 1
        elif clip.vocal_channel not in wanted:
            skipped[f"{VOCAL_CHANNEL[clip.vocal_channel]} clip(s)"] += 1
        else:
            kept.append(name)
    return kept, skipped


def _check_vocal(vocal: str) -> None:
    if vocal not in VOCAL_CHOICES:
        raise ValueError(f"vocal={vocal!r} is not one of {VOCAL_CHOICES}: 'speech' (the paper's clips), "
                         "'song' or 'both'.")


def _zip_folder(zip_path: Path) -> Path:
    """The cache folder a zip's members are extracted to, keyed by the zip's identity."""
    st = zip_path.stat()
    key = hashlib.blake2b(f"{zip_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=6).hexdigest()
    return Path(paths.CACHE_DIR) / "zips" / f"{zip_path.stem}-{key}"


def _extract(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], folder: Path) -> list[Path]:
    """Extract ``members`` below ``folder`` (those already there in full are kept), each through a
    temporary file so an interrupted extraction never leaves a half-written CSV."""
    out = []
    for info in members:
        # Only the member's own path below the folder: a name like "/etc/x.csv", "C:\\x.csv" or "../x.csv" stays inside.
        name = info.filename.replace("\\", "/")
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "..", "/") and not p.endswith(":")]
        target = folder.joinpath(*parts)
        if not (target.is_file() and target.stat().st_size == info.file_size):
            with atomic_path(target) as tmp, archive.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        out.append(target)
    return out


def find_clips(aus_dir: str | os.PathLike, vocal: str = "speech", recursive: bool = True) -> ClipFiles:
    """The AU files of ``aus_dir`` (a folder, or a ``.zip`` of one) for the ``vocal`` channel.

    ``recursive`` (the default) also searches subfolders, whatever their layout
    (``Actor_01/``, ``FacialTracking_Actors_01-24/Actor_01/``, ...).
    """
    _check_vocal(vocal)
    source = Path(aus_dir)
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = {info.filename: info for info in archive.infolist()
                       if not info.is_dir() and _is_candidate(PurePosixPath(info.filename).parts)
                       and (recursive or len(PurePosixPath(info.filename).parts) == 1)}
            kept, skipped = _select(sorted(members), vocal)
            if not members:
                raise DataError(f"Zip file {source} holds no .csv files. Expected one OpenFace CSV per clip named "
                                "after the clip, e.g. Actor_12/01-01-03-02-01-01-12.csv.")
            folder = _zip_folder(source)
            files = _extract(archive, [members[name] for name in kept], folder)
        return ClipFiles(source, files, vocal, skipped, extracted_to=folder)
    if source.is_file():
        raise DataError(f"{source} is a file but not a zip archive. Point aus_dir at a folder of per-clip OpenFace "
                        "CSVs or at the zip file that holds them.")
    if not source.is_dir():
        raise DataError(f"AU folder {source} does not exist. Point aus_dir at a folder of per-clip OpenFace CSVs "
                        "(or a zip of them), or set it to None to use the built-in synthetic data set.")
    found = source.rglob("*") if recursive else source.iterdir()
    candidates = sorted(p for p in found if p.is_file() and _is_candidate(p.relative_to(source).parts))
    if not candidates:
        raise DataError(f"AU folder {source} holds no .csv files. Expected one OpenFace CSV per clip named after the "
                        "clip, e.g. 01-01-03-02-01-01-12.csv" + ("." if recursive else " (use recursive=True for "
                                                                 "subfolders)."))
    kept, skipped = _select([str(p) for p in candidates], vocal)
    return ClipFiles(source, [Path(p) for p in kept], vocal, skipped)
