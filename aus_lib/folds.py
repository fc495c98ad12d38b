"""Subject-wise (actor-disjoint) K-fold cross-validation, each fold's partitions (training, inner
validation, test: :func:`split_fold`) and the original fold-list files.

The fold lists follow the original sequenceLearning text format so that users of the
original workflow can reuse them: tab-separated, no header,

* ``complete_dataset_{K}CV.txt``: sample number (5 digits), label, path to the clip's CSV,
  the clip's file name, test fold;
* ``training-fold_{k}_outof_{K}.txt`` / ``validation-fold_{k}_outof_{K}.txt``: the first
  four of those columns, for the clips in (resp. out of) fold k's training part.
"""
from __future__ import annotations

import random
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from aus_lib.ravdess import EMOTIONS, LABEL_INDEX, LABELS, emotion_name, parse_name
from aus_lib import dataset
from aus_lib.dataset import ClipData
from aus_lib.runs import atomic_write_csv, atomic_write_text

if TYPE_CHECKING:
    from aus_lib.config import Config

# The split used in the paper (Luna-Jiménez et al. 2022) for K = 5 on all 24 actors:
# fold -> test actors.
PAPER_FOLDS: dict[int, tuple[int, ...]] = {
    1: (2, 5, 14, 15, 16),
    2: (3, 6, 7, 13, 18),
    3: (10, 11, 12, 19, 20),
    4: (8, 17, 21, 23, 24),
    5: (1, 4, 9, 22),
}


class FoldError(ValueError):
    """Folds that are not a valid actor-disjoint cross-validation."""


def make_folds(clips_per_actor: Mapping[int, int], kfolds: int, seed: int = 2020,
               explicit: Mapping[int, list[int]] | None = None) -> dict[int, tuple[int, ...]]:
    """Assign whole actors to ``kfolds`` test folds.

    ``clips_per_actor`` maps each actor present to its number of clips. With K = 5 and all
    24 RAVDESS actors present, the paper's split is used. ``explicit`` (fold -> test actors)
    overrides everything and is checked. Otherwise actors are shuffled with ``seed`` and
    placed greedily, largest first, into the fold with the fewest clips so far: a
    deterministic split balanced in clip count.
    """
    actors = sorted(int(a) for a in clips_per_actor)
    if kfolds < 2:
        raise FoldError(f"kfolds={kfolds}: cross-validation needs at least 2 folds.")
    if kfolds > len(actors):
        raise FoldError(
            f"kfolds={kfolds} but the data has only {len(actors)} actor(s) ({actors}); folds are "
            f"actor-disjoint, so use kfolds <= {len(actors)}."
        )
    if explicit is not None:
        folds = {int(k): tuple(sorted(int(a) for a in v)) for k, v in explicit.items()}
        check_folds(folds, actors)
        return folds
    if kfolds == 5 and actors == list(range(1, 25)):
        return dict(PAPER_FOLDS)
    rng = random.Random(seed)
    order = actors[:]
    rng.shuffle(order)
    # Stable sort after the shuffle: ties in clip count are broken by the seeded order.
    order.sort(key=lambda a: -clips_per_actor[a])
    load = {k: 0 for k in range(1, kfolds + 1)}
    members: dict[int, list[int]] = {k: [] for k in load}
    for actor in order:
        k = min(load, key=lambda f: (load[f], len(members[f]), f))
        members[k].append(actor)
        load[k] += clips_per_actor[actor]
    return {k: tuple(sorted(v)) for k, v in members.items()}


def check_folds(folds: Mapping[int, tuple[int, ...]], actors: list[int]) -> None:
    """Every actor tests in exactly one fold, folds are numbered 1..K and none is empty."""
    if sorted(folds) != list(range(1, len(folds) + 1)):
        raise FoldError(f"Folds must be numbered 1..K; got {sorted(folds)}.")
    seen: dict[int, int] = {}
    for k, members in folds.items():
        if not members:
            raise FoldError(f"Fold {k} has no test actors.")
        for a in members:
            if a in seen:
                raise FoldError(f"Actor {a} is in the test part of folds {seen[a]} and {k}; each actor must test in exactly one fold.")
            seen[a] = k
    missing = sorted(set(actors) - set(seen))
    if missing:
        raise FoldError(f"Actor(s) {missing} are in the data but in no fold's test actors: add them to a fold.")
    unknown = sorted(set(seen) - set(actors))
    if unknown:
        raise FoldError(f"Fold test actors {unknown} have no clips in the data: remove them or check the data folder.")


def assign_folds(manifest: pd.DataFrame, folds: Mapping[int, tuple[int, ...]]) -> pd.DataFrame:
    """A copy of ``manifest`` (needs an ``actor`` column) with a ``fold`` column (its test fold)."""
    fold_of = {a: k for k, members in folds.items() for a in members}
    out = manifest.copy()
    out["fold"] = out["actor"].map(fold_of)
    if out["fold"].isna().any():
        lost = sorted(out.loc[out["fold"].isna(), "actor"].unique())
        raise FoldError(f"Actor(s) {lost} are in no fold.")
    out["fold"] = out["fold"].astype(int)
    return out


def folds_from_manifest(manifest: pd.DataFrame) -> dict[int, tuple[int, ...]]:
    """Fold -> test actors, read back from a manifest with ``actor`` and ``fold`` columns."""
    return {int(k): tuple(sorted(int(a) for a in g["actor"].unique())) for k, g in manifest.groupby("fold")}


def check_training_emotions(manifest: pd.DataFrame) -> None:
    """Each fold's training part must hold every emotion present in the data, or the class
    weights and the classifier for that emotion are undefined."""
    present = set(manifest["emotion"])
    for k in sorted(manifest["fold"].unique()):
        train = set(manifest.loc[manifest["fold"] != k, "emotion"])
        absent = sorted(present - train, key=EMOTIONS.index)
        if absent:
            raise FoldError(
                f"Fold {k}: the training part has no clip of {absent}. Put actors with those emotions "
                "in other folds, or use fewer folds."
            )


# --- one fold's partitions: training, inner validation, test ---------------------------------

class FoldSplit(NamedTuple):
    """Clip indices (into the manifest / ClipData) of one fold's three partitions."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray



def _fold_of_clips(source: pd.DataFrame | ClipData,
                   folds: Mapping[int, Iterable[int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """(actor, test fold) of every clip of a manifest or ClipData."""
    if isinstance(source, pd.DataFrame):
        actors = source["actor"].to_numpy(np.int64)
        if folds is None:
            if "fold" not in source:
                raise FoldError("The manifest has no 'fold' column: pass folds= (fold -> test actors) or use "
                                 "folds.assign_folds first.")
            return actors, source["fold"].to_numpy(np.int64)
    elif isinstance(source, ClipData):
        actors = np.asarray(source.actors, dtype=np.int64)
        if folds is None:
            raise FoldError("ClipData carries no folds: pass folds= (fold -> test actors), e.g. from folds.make_folds.")
    else:
        raise TypeError(f"split_fold needs a manifest DataFrame or a ClipData, got {type(source).__name__}.")
    fold_of = {int(a): int(k) for k, members in folds.items() for a in members}
    missing = sorted(set(actors.tolist()) - set(fold_of))
    if missing:
        raise FoldError(f"Actor(s) {missing} are in no fold of folds={dict(folds)}.")
    return actors, np.array([fold_of[a] for a in actors.tolist()], dtype=np.int64)



def split_fold(source: pd.DataFrame | ClipData, k: int, cfg: Config,
               folds: Mapping[int, Iterable[int]] | None = None) -> FoldSplit:
    """Train / validation / test clip indices of fold ``k`` under ``cfg.selection``.

    ``source`` is a manifest with ``actor`` and ``fold`` columns, or a manifest / ClipData plus
    ``folds`` (fold -> test actors). Test = the clips of fold k's actors. With ``"test_fold"``
    validation is the test fold itself; with ``"inner"`` it is ``cfg.inner_val_actors`` training
    actors drawn from ``(seed, k)`` (fewer if needed so at least one training actor remains).
    """
    actors, fold = _fold_of_clips(source, folds)
    if k not in set(fold.tolist()):
        raise FoldError(f"Fold {k} does not exist; the folds are {sorted(set(fold.tolist()))}.")
    test = np.flatnonzero(fold == k)
    rest = np.flatnonzero(fold != k)
    if cfg.selection == "test_fold":
        return FoldSplit(rest, test, test)
    if cfg.selection != "inner":
        raise FoldError(f"selection={cfg.selection!r}: use 'test_fold' or 'inner'.")
    train_actors = np.unique(actors[rest])
    rng = np.random.default_rng([cfg.seed, k])
    n_val = inner_val_count(len(train_actors), cfg.inner_val_actors, k)
    if n_val == 0:
        return _inner_split_by_clips(rest, test, source, k, rng)
    val_actors = rng.choice(train_actors, size=n_val, replace=False)
    is_val = np.isin(actors[rest], val_actors)
    return FoldSplit(rest[~is_val], rest[is_val], test)



MIN_TRAIN_ACTORS = 2     # inner validation never leaves fewer training actors than this, if it can help it


INNER_VAL_FRACTION = 0.2  # inner_val_actors="auto": this share of the training actors, rounded, at least 1



def inner_val_count(n_train_actors: int, setting: int | str, k: int = 0) -> int:
    """How many of ``n_train_actors`` training actors fold ``k`` holds out for inner validation.

    ``"auto"``: a fifth of them (rounded, at least 1) while at least :data:`MIN_TRAIN_ACTORS`
    remain to train on, e.g. 4 of 19 (24 actors, 5 folds), 1 of 4 (5 actors, one per fold);
    with 2 or 3 training actors 1 (a warning says how few remain); with a single training actor
    0, meaning a fifth of that actor's clips is held out instead (see :func:`split_fold`).
    An integer asks for that many, capped so one training actor remains.
    """
    if n_train_actors < 1:
        raise FoldError(f"Fold {k}: no training actors; every actor is in the test fold.")
    if setting == "auto":
        n_val = max(1, round(INNER_VAL_FRACTION * n_train_actors))
        n_val = min(n_val, max(1, n_train_actors - MIN_TRAIN_ACTORS))
    else:
        n_val = int(setting)
    n_val = min(n_val, n_train_actors - 1)
    left = n_train_actors - n_val
    if 0 < n_val and left < MIN_TRAIN_ACTORS:
        warnings.warn(f"Fold {k}: inner validation holds out {n_val} of {n_train_actors} training actors, leaving "
                      f"{left} to train on. Results with so few training actors are weak; use more actors or fewer "
                      "held-out ones (inner_val_actors).", stacklevel=1)  # one location: shown once per fold
    return n_val



def _inner_split_by_clips(rest: np.ndarray, test: np.ndarray, source, k: int, rng: np.random.Generator) -> FoldSplit:
    """Inner validation from a single training actor: a fifth of its clips, stratified by emotion.
    Not actor-disjoint, so it judges epochs on the same person; the test fold is still untouched."""
    warnings.warn(f"Fold {k}: only one training actor, so inner validation holds out a fifth of that actor's clips "
                  "(stratified by emotion) instead of whole actors.", stacklevel=1)  # one location: once per fold
    labels = (np.asarray(source.labels) if isinstance(source, ClipData)
              else np.array([LABEL_INDEX[e] for e in source["emotion"]]))
    is_val = np.zeros(len(rest), dtype=bool)
    for label in np.unique(labels[rest]):
        members = np.flatnonzero(labels[rest] == label)
        take = max(1, round(INNER_VAL_FRACTION * len(members))) if len(members) > 1 else 0
        is_val[rng.choice(members, size=take, replace=False)] = True
    return FoldSplit(rest[~is_val], rest[is_val], test)


# --- the original sequenceLearning fold-list files -----------------------------------------

def complete_list_name(kfolds: int) -> str:
    return f"complete_dataset_{kfolds}CV.txt"


def fold_list_names(k: int, kfolds: int) -> tuple[str, str]:
    return f"training-fold_{k}_outof_{kfolds}.txt", f"validation-fold_{k}_outof_{kfolds}.txt"


def write_fold_lists(manifest: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write the original-format fold lists for a manifest with clip, emotion, path, fold."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kfolds = int(manifest["fold"].max())
    rows = manifest.reset_index(drop=True)
    sample = [f"{i:05d}" for i in range(len(rows))]
    lines = [
        "\t".join((s, r.emotion, str(r.path), Path(str(r.path)).name, str(int(r.fold))))
        for s, r in zip(sample, rows.itertuples(index=False))
    ]
    written = [out_dir / complete_list_name(kfolds)]
    atomic_write_text(written[0], "\n".join(lines) + "\n")
    for k in range(1, kfolds + 1):
        train_name, val_name = fold_list_names(k, kfolds)
        for name, keep in ((train_name, rows["fold"] != k), (val_name, rows["fold"] == k)):
            part = [line.rsplit("\t", 1)[0] for line, m in zip(lines, keep) if m]
            path = out_dir / name
            atomic_write_text(path, "\n".join(part) + ("\n" if part else ""))
            written.append(path)
    return written


def read_fold_list(path: str | Path) -> pd.DataFrame:
    """Read an original-format list (4 or 5 tab-separated columns, no header).

    Returns columns sample, label (emotion name), path, file, clip and, for the complete
    list, fold. Numeric labels are read as indices into :data:`LABELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Fold list {path} does not exist; run notebook 01_make_folds to create it.")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (4, 5):
            raise FoldError(f"{path}, line {n}: expected 4 or 5 tab-separated fields, found {len(fields)}.")
        try:
            label = emotion_name(int(fields[1]) if fields[1].isdigit() else fields[1])
        except ValueError:
            raise FoldError(f"{path}, line {n}: unknown label {fields[1]!r}; expected one of {list(LABELS)}.") from None
        clip = Path(fields[3]).stem
        named = parse_name(clip).emotion
        if label != named:
            raise FoldError(f"{path}, line {n}: label {fields[1]!r} ({label}) but clip {clip} is {named} by its name. "
                            "Fold lists take the label from the clip name: re-run 01_make_folds (make-folds), or fix "
                            "the line.")
        row = {"sample": fields[0], "label": label, "path": fields[2], "file": fields[3], "clip": clip}
        if len(fields) == 5:
            row["fold"] = int(fields[4])
        rows.append(row)
    return pd.DataFrame(rows)


def read_fold_lists(folds_dir: str | Path, kfolds: int) -> pd.DataFrame:
    """The complete list of a folder written by :func:`write_fold_lists`, checked against the
    per-fold files: one row per clip with clip, label, path, actor and fold."""
    folds_dir = Path(folds_dir)
    table = read_fold_list(folds_dir / complete_list_name(kfolds))
    if "fold" not in table:
        raise FoldError(f"{folds_dir / complete_list_name(kfolds)} has no fold column (5th field).")
    for k in range(1, kfolds + 1):
        _, val_name = fold_list_names(k, kfolds)
        val = read_fold_list(folds_dir / val_name)
        expected = set(table.loc[table["fold"] == k, "clip"])
        if set(val["clip"]) != expected:
            raise FoldError(f"{folds_dir / val_name} does not list the same clips as fold {k} of the complete list.")
    table["actor"] = [parse_name(c).actor for c in table["clip"]]
    missing = [p for p in table["path"] if not Path(p).is_file()]
    if missing:
        raise FoldError(
            f"{len(missing)} clip path(s) in {folds_dir / complete_list_name(kfolds)} do not exist, e.g. {missing[0]}. "
            "Re-run 01_make_folds for the data folder you use now."
        )
    overlap = table.groupby("actor")["fold"].nunique()
    if (overlap > 1).any():
        a = int(overlap[overlap > 1].index[0])
        raise FoldError(f"Actor {a} is in more than one test fold in {folds_dir}; folds must be actor-disjoint.")
    return table


# --- the whole step, as notebook 01 and the CLI run it -------------------------------------

def make_fold_files(manifest: pd.DataFrame, out_dir: str | Path, kfolds: int, seed: int = 2020,
                    explicit: Mapping[int, list[int]] | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Split a manifest into actor-disjoint folds and write everything 02_train_cv reads:
    the original fold lists and ``manifest_{K}CV.csv`` (one row per clip, with its ``fold``).

    Fold files already in ``out_dir`` for other clips or another split are not replaced
    unless ``overwrite=True``; writing the same split again is harmless.
    """

    counts = manifest.groupby("actor").size().to_dict()
    folds = make_folds(counts, kfolds, seed, explicit)
    table = assign_folds(manifest, folds)
    check_training_emotions(table)
    existing = Path(out_dir) / manifest_name(kfolds)
    if existing.is_file() and not overwrite:
        old = pd.read_csv(existing)
        same = (sorted(zip(old["path"], old["fold"])) == sorted(zip(table["path"], table["fold"])))
        if not same:
            raise FoldError(f"{existing} already holds a different split (other clips or folds). Pass overwrite=True "
                            "to replace it, or choose another out_dir.")
    write_fold_lists(table, out_dir)
    atomic_write_csv(Path(out_dir) / manifest_name(kfolds), table, index=False)
    return table


def manifest_name(kfolds: int) -> str:
    return f"manifest_{kfolds}CV.csv"


def read_manifest(folds_dir: str | Path, kfolds: int) -> pd.DataFrame:
    """The manifest 01_make_folds wrote, checked against its original-format fold lists."""
    path = Path(folds_dir) / manifest_name(kfolds)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebook 01_make_folds with kfolds={kfolds} "
                                f"and out_dir={folds_dir} first.")
    table = pd.read_csv(path)
    named = [parse_name(c).emotion for c in table["clip"]]
    wrong = [(c, e, n) for c, e, n in zip(table["clip"], table["emotion"], named) if e != n]
    if wrong:
        raise FoldError(f"{path}: {len(wrong)} clip(s) carry an emotion other than their name says, e.g. "
                        f"{wrong[0][0]} is {wrong[0][2]} but listed as {wrong[0][1]}; re-run 01_make_folds.")
    lists = read_fold_lists(folds_dir, kfolds)
    if set(lists["clip"]) != set(table["clip"]):
        raise FoldError(f"{path} and the fold lists in {folds_dir} name different clips; re-run 01_make_folds.")
    check_folds(folds_from_manifest(table), sorted(table["actor"].unique()))
    return table


def manifests_in(folds_dir: Path) -> dict[int, Path]:
    """K -> manifest file of every ``manifest_{K}CV.csv`` in ``folds_dir``."""
    found = {}
    for path in folds_dir.glob("manifest_*CV.csv"):
        k = path.name[len("manifest_"):-len("CV.csv")]
        if k.isdigit():
            found[int(k)] = path
    return found


def _check_data_folder(manifest: pd.DataFrame, aus_dir: Path, manifest_path: Path) -> None:
    """Fold lists made from another folder than the ``aus_dir`` the user names are refused."""
    root = Path(aus_dir).resolve()
    elsewhere = [p for p in manifest["path"] if not Path(p).resolve().is_relative_to(root)]
    if elsewhere:
        raise FoldError(f"{manifest_path} lists clips outside aus_dir {aus_dir} (e.g. {elsewhere[0]}): these fold "
                        f"lists were made from other data. Use another folds_dir for {aus_dir}, or leave aus_dir out "
                        "to train on the data of these fold lists.")


def load_or_make(folds_dir: str | Path, kfolds: int, aus_dir=None, seed: int = 2020, *,
                 synthetic: bool = True) -> pd.DataFrame:
    """The manifest of ``folds_dir`` when 01_make_folds wrote one, else build it there from
    ``aus_dir``; with ``aus_dir=None`` from the built-in synthetic data set, only when
    ``synthetic`` (the user named no data at all) and the folder holds nothing else.

    Fold lists of another K, of a folder other than ``aus_dir``, or a ``folds_dir`` with other
    files and no manifest are errors: training on data the user did not mean is worse than stopping.
    """

    folds_dir = Path(folds_dir)
    path = folds_dir / manifest_name(kfolds)
    if path.is_file():
        manifest = read_manifest(folds_dir, kfolds)
        if aus_dir is not None:
            _check_data_folder(manifest, aus_dir, path)
        return manifest
    others = manifests_in(folds_dir) if folds_dir.is_dir() else {}
    if others:
        shown = ", ".join(f"{k} folds ({p.name})" for k, p in sorted(others.items()))
        raise FoldError(f"kfolds={kfolds} but {folds_dir} holds fold lists for {shown}. Use kfolds="
                        f"{min(others)}, or make {kfolds} folds into another folder (make-folds --kfolds {kfolds} "
                        "--out-dir ...).")
    if aus_dir is None and not synthetic:
        raise FoldError(f"{folds_dir} holds no fold lists ({path.name} is missing). Check the folder name, run "
                        "make-folds (notebook 01_make_folds) into it first, or give the AU folder (aus_dir) to make "
                        "the folds from.")
    if folds_dir.is_dir() and any(p for p in folds_dir.iterdir() if not p.name.startswith(".")):
        raise FoldError(f"{folds_dir} holds files but no {path.name}: it is not a folder of fold lists written by "
                        "make-folds. Choose an empty or new folds_dir.")
    manifest = dataset.build_manifest(dataset.resolve_aus_dir(aus_dir, seed=seed))
    return make_fold_files(manifest, folds_dir, kfolds, seed)
