"""Posteriors and attention from a finished run (the original ``run.py inference``).

For each fold the best checkpoint is loaded (its architecture comes from the checkpoint),
applied to a partition of the clips, and the original sequenceLearning posterior files are
written, plus a tidy long table for pandas users.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aus_lib import dataset, posteriors
from aus_lib.progress import progress_bar
from aus_lib.ravdess import LABELS
from aus_lib.runs import Run, atomic_write_csv

PARTITIONS = ("train", "val", "all")


@dataclass
class Predictions:
    """Model outputs for a set of clips, in the order of ``names``."""

    names: list[str]
    labels: np.ndarray          # [n] index into LABELS
    logits: np.ndarray          # [n, 8] float32, LABELS order
    attentions: list[np.ndarray]  # one weight per real frame

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


def predict(model: torch.nn.Module, data: dataset.ClipData, batch_size: int = 64,
            device: str | torch.device = "cpu", normalization=None, num_threads: int | None = 1) -> Predictions:
    """Logits and per-frame attention for every clip of ``data`` (eval mode, no gradients).

    Clips are batched in length order so little padding is computed; outputs come back in
    the order of ``data``. On CPU, ``num_threads`` caps torch's threads while predicting: the
    LSTM's per-frame steps are too small to share between threads, and a second thread that
    competes with another busy process slowed it a hundredfold on a 2-core machine.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _predict(model, data, batch_size, device, normalization)
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def _predict(model, data, batch_size, device, normalization) -> Predictions:
    from aus_lib.checkpoints import apply_normalization

    model = model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    logits = np.zeros((len(data), len(LABELS)), dtype=np.float32)
    attentions: list[np.ndarray] = [np.empty(0)] * len(data)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lengths = data.lengths[idx]
        x = torch.from_numpy(data.features[idx, : int(lengths.max())])
        x = apply_normalization(x, torch.from_numpy(lengths), normalization)
        out, att = model(x.to(device), torch.from_numpy(lengths))
        logits[idx] = out.float().cpu().numpy()
        att = att.float().cpu().numpy()
        for row, i in enumerate(idx):
            attentions[i] = att[row, : lengths[row]].copy()
    return Predictions(list(data.names), data.labels.copy(), logits, attentions)


def member_paths(fold_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint file(s) of a fold: its own, or its ensemble members' (``final_fit="ensemble"``)."""
    import torch

    path = Path(fold_dir) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: fold {path.parent.name} of {path.parent.parent} has not finished "
                                "training (resume the run in 02_train_cv).")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "members" not in checkpoint:
        return [path]
    return [path.parent / member for member in checkpoint["members"]]


def fold_models(fold_dir: str | os.PathLike, device: str | torch.device = "cpu") -> list[tuple[torch.nn.Module, dict]]:
    """(model, checkpoint) of each model a fold predicts with: one, or its ensemble's members."""
    from aus_lib.checkpoints import load_checkpoint

    return [load_checkpoint(path, device) for path in member_paths(fold_dir)]


def checked_fold_models(run_dir: Path, k: int, params: dict, manifest: pd.DataFrame,
                        fingerprint: str | None) -> list[tuple[torch.nn.Module, dict]]:
    """:func:`fold_models` of fold ``k`` of a run, each checked to belong to it (:func:`check_checkpoint`)."""
    fold_dir = run_dir / f"fold_{k}"
    fold_actors = sorted(int(a) for a in manifest.loc[manifest["fold"] == k, "actor"].unique())
    members = fold_models(fold_dir)
    for path, (_, ckpt) in zip(member_paths(fold_dir), members):
        # An ensemble member differs from the run's config only in its own seed.
        expected = {**params, "seed": ckpt["params"].get("seed")} if len(members) > 1 else params
        check_checkpoint(ckpt, path, k, expected, fold_actors, fingerprint)
    return members


def predict_averaged(models: list[tuple[torch.nn.Module, dict]], data: dataset.ClipData,
                     device: str | torch.device = "cpu") -> Predictions:
    """:func:`predict` with each (model, checkpoint) of :func:`fold_models`; with several, their softmax
    posteriors are averaged (``logits`` = log of the average, so softmax gives it back) and so are
    their attention weights."""
    preds = [predict(model, data, device=device, normalization=ckpt.get("normalization")) for model, ckpt in models]
    if len(preds) == 1:
        return preds[0]
    probabilities = np.mean([torch.softmax(torch.from_numpy(p.logits).double(), 1).numpy() for p in preds], axis=0)
    attentions = [np.mean([p.attentions[i] for p in preds], axis=0) for i in range(len(data))]
    return Predictions(preds[0].names, preds[0].labels, np.log(probabilities).astype(np.float32), attentions)


def partition_index(manifest: pd.DataFrame, k: int, partition: str) -> np.ndarray:
    """Rows of ``manifest`` in fold k's partition: ``val`` = the fold's held-out test actors (the
    original's validation list), ``train`` = the rest, ``all`` = every clip."""
    if partition not in PARTITIONS:
        raise ValueError(f"inference_data={partition!r}: use one of {', '.join(PARTITIONS)}.")
    if partition == "all":
        return np.arange(len(manifest))
    mask = manifest["fold"].to_numpy() == k
    return np.flatnonzero(mask if partition == "val" else ~mask)


def run_info(run_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """The params and the clip manifest (with folds) a run was trained on."""
    return Run(run_dir).read()


def actor_normalized(run_dir: Path, params: dict, data: dataset.ClipData) -> dataset.ClipData:
    """``data`` (raw clips of the run) with the run's actor normalization, using the per-actor
    statistics saved at training time, so inference sees exactly what training saw."""
    from aus_lib import normalize

    kind = params.get("actor_normalization")
    if kind is None:
        return data
    stats_file = run_dir / normalize.ACTOR_STATS_FILE
    if not stats_file.is_file():
        raise FileNotFoundError(f"{stats_file} is missing: the run was trained with actor_normalization={kind!r} "
                                "and its per-actor statistics are needed to reproduce its inputs.")
    try:
        record = json.loads(stats_file.read_text())
        saved_kind, stats = normalize.statistics_from_json(record)
    except (json.JSONDecodeError, normalize.NormalizationError) as exc:
        raise normalize.NormalizationError(f"{stats_file}: {exc} Train the run again, or restore the file "
                                           "the run wrote.") from None
    if saved_kind != kind:
        raise ValueError(f"{stats_file} holds {saved_kind!r} statistics but the run's config says {kind!r}.")
    if list(record.get("columns", data.columns)) != list(data.columns):
        raise ValueError(f"{stats_file} holds statistics of the columns {record['columns']}, but the clips have "
                         f"{list(data.columns)}: they are not the AU set the run was trained on.")
    return normalize.normalize_data(data, kind, stats)


def check_checkpoint(checkpoint: dict, path: Path, k: int, params: dict, test_actors: list[int],
                     fingerprint: str | None) -> None:
    """Refuse a checkpoint of another fold, configuration or data than fold ``k`` of this run
    (``fingerprint`` None: the run's data is not at hand, as when scoring new clips)."""
    from aus_lib.checkpoints import CheckpointError, differences

    problems = []
    if checkpoint.get("fold") != k:
        problems.append(f"it is the checkpoint of fold {checkpoint.get('fold')}, not fold {k}")
    if list(checkpoint.get("test_actors", test_actors)) != list(test_actors):
        problems.append(f"its test actors are {checkpoint['test_actors']}, fold {k}'s are {test_actors}")
    found = checkpoint["params"]
    diffs = differences(found, params)
    if diffs:
        problems.append("its config differs from the run's config.json in "
                        + ", ".join(f"{key} ({json.dumps(found.get(key))} vs {json.dumps(params.get(key))})"
                                    for key in diffs))
    if fingerprint is not None and checkpoint.get("data") is not None and checkpoint["data"] != fingerprint:
        problems.append(f"it was trained on other data (fingerprint {checkpoint['data']}, the run's clips now give "
                        f"{fingerprint}): the AU files changed since training")
    if problems:
        raise CheckpointError(f"{path} does not belong to fold {k} of this run: " + "; ".join(problems)
                              + ". Put the run's own checkpoint back, or train again.")


def extract_posteriors(run_dir: str | os.PathLike, partition: str = "val", out_dir: str | os.PathLike | None = None,
                       kfolds: int | None = None, desc: str = "", device: str = "cpu", progress: bool = True,
                       data: dataset.ClipData | None = None) -> pd.DataFrame:
    """Write the original posterior files for every fold of ``run_dir`` and return the long table.

    Files go to ``out_dir`` (default ``run_dir/posteriors``); the long table (clip, fold,
    partition, label, prediction, p_<emotion>) is saved there as ``posteriors_long_<partition>.csv``.
    """
    from aus_lib.checkpoints import data_fingerprint

    run_dir = Path(run_dir)
    params, manifest = run_info(run_dir)
    k_run = int(manifest["fold"].max())
    if kfolds is not None and kfolds != k_run:
        raise ValueError(f"kfolds={kfolds} but {run_dir} was trained with {k_run} folds.")
    out_dir = Path(out_dir) if out_dir is not None else Run(run_dir).posteriors
    data = data if data is not None else dataset.load_clips(manifest, progress=progress)
    data = actor_normalized(run_dir, params, data)
    fingerprint = data_fingerprint(data)  # of the inputs as training saw them (normalized)
    tables = []
    for k in progress_bar(range(1, k_run + 1), desc=f"Posteriors ({partition})", unit="fold", disable=not progress):
        idx = partition_index(manifest, k, partition)
        pred = predict_averaged(checked_fold_models(run_dir, k, params, manifest, fingerprint), data.subset(idx), device)
        posteriors.write_posteriors(out_dir, params["name"], partition, k, k_run, pred.names,
                                    pred.labels, pred.predicted, pred.logits, pred.attentions, desc=desc)
        # From memory, not read back from the files: the same values (the files hold each float's
        # repr), a quarter of the time of writing and reading 1440 clips.
        table = pd.DataFrame({"clip": [posteriors.clip_stem(n) for n in pred.names],
                              "y": [LABELS[i] for i in pred.labels], "y_hat": [LABELS[i] for i in pred.predicted],
                              "posteriors": list(pred.logits.astype(np.float64))})
        tables.append(posteriors.to_long_table(table, k, partition))
    long = pd.concat(tables, ignore_index=True)
    atomic_write_csv(out_dir / f"posteriors_long_{partition}.csv", long, index=False)
    return long


# --- scoring new clips --------------------------------------------------------------------------

@dataclass
class ClipScores:
    """A run's fold models applied to loose AU files: one row of ``table`` per clip.

    ``table``: clip, file, frames, actor (from a RAVDESS name, else empty), named_emotion (the
    emotion the RAVDESS name gives, else empty), statistics (which actor-normalization statistics
    were used), predicted, folds_agreeing, then ``p_<emotion>`` in display order: the softmax
    posteriors averaged over the fold models. ``aus`` holds each clip's AU frames as read,
    ``attention`` the fold models' mean attention weight per frame.
    """

    run_dir: Path
    folds: int
    table: pd.DataFrame
    aus: dict[str, pd.DataFrame]
    attention: dict[str, np.ndarray]


def _run_format(params: dict, run_dir: Path) -> str:
    from aus_lib.openface import AU_SETS

    for fmt, columns in AU_SETS.items():
        if len(columns) == params["input_size"]:
            return fmt
    raise ValueError(f"{run_dir / 'config.json'}: input_size {params['input_size']} matches no AU format "
                     f"({', '.join(f'{f}: {len(c)}' for f, c in AU_SETS.items())}).")


def _read_clips(paths: list[Path], fmt: str, run_dir: Path) -> dict[str, pd.DataFrame]:
    """Each file's AU frames, keyed by clip name (the file's stem); every file must be in the run's format."""
    from aus_lib.openface import AU_SETS, au_format, read_aus
    from aus_lib.ravdess import clip_stem

    if not paths:
        raise ValueError("No AU files given: pass one or more OpenFace or py-feat CSV files to score.")
    by_name: dict[str, Path] = {}
    for path in paths:
        name = clip_stem(path)
        if name in by_name:
            raise ValueError(f"{by_name[name]} and {path} share the clip name {name!r}; their results would land in "
                             "one row and one figure. Rename one of them.")
        by_name[name] = path
    clips = {}
    for name, path in by_name.items():
        found = au_format(path) if path.is_file() else fmt  # read_aus names a missing file
        if found != fmt:
            raise ValueError(f"{path} holds {found} AUs ({len(AU_SETS[found])} columns) but {run_dir} was trained on "
                             f"{fmt} AUs (input_size {len(AU_SETS[fmt])}): score it with a run trained on {found} data.")
        clips[name] = read_aus(path)
    return clips


def _statistics_note(kind: str | None, actor: int | None, n_clips: int) -> str:
    if kind is None:
        return "none (the run uses no actor normalization)"
    if actor is None:
        return f"{kind} of this clip alone (no RAVDESS name, so no actor to group it with)"
    return f"{kind} of actor {actor} from {n_clips} given clip(s)" + (" (this clip alone)" if n_clips == 1 else "")


def predict_clips(run_dir: str | os.PathLike, paths, device: str = "cpu") -> ClipScores:
    """Score AU files (raw or processed OpenFace, or py-feat; any names) with every fold model of a run.

    Each fold's checkpoint is applied with its own preprocessor scaling; the posteriors
    (softmax of the logits) and attention weights are averaged over the folds. With the run's
    ``actor_normalization``, clips named like RAVDESS files share their actor's statistics,
    computed from the given clips (:func:`aus_lib.normalize.normalize_clips`); any other clip
    uses its own. A clip of one of the run's actors was training data for some fold models, so
    its average is optimistic: 03's posteriors are the honest figure for the run's own clips.
    """
    from aus_lib import normalize
    from aus_lib.openface import AU_SETS
    from aus_lib.ravdess import EMOTIONS, RavdessNameError, parse_name

    run_dir = Path(run_dir)
    params, manifest = run_info(run_dir)
    fmt = _run_format(params, run_dir)
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    aus = _read_clips(paths, fmt, run_dir)
    named = {}
    for name in aus:
        try:
            named[name] = parse_name(name)
        except RavdessNameError:
            named[name] = None
    actors = {name: clip.actor if clip else None for name, clip in named.items()}
    kind = params.get("actor_normalization")
    frames = normalize.normalize_clips({n: a.to_numpy(np.float32) for n, a in aus.items()}, actors, kind)

    names = list(aus)
    lengths = np.array([len(frames[n]) for n in names], dtype=np.int64)
    features = np.zeros((len(names), int(lengths.max()), len(AU_SETS[fmt])), dtype=np.float32)
    for i, n in enumerate(names):
        features[i, : lengths[i]] = frames[n]
    data = dataset.ClipData(names, features, lengths, np.zeros(len(names), dtype=np.int64),
                            np.array([actors[n] or 0 for n in names], dtype=np.int64), AU_SETS[fmt])

    k_run = int(manifest["fold"].max())
    probs, attention, votes = [], [], []
    for k in range(1, k_run + 1):
        pred = predict_averaged(checked_fold_models(run_dir, k, params, manifest, fingerprint=None), data, device)
        probs.append(posteriors.softmax(pred.logits))
        attention.append(pred.attentions)
        votes.append(pred.predicted)
    mean = np.mean(probs, axis=0)
    predicted = mean.argmax(axis=1)
    agreeing = (np.array(votes) == predicted).sum(axis=0)
    group_size = Counter(actors.values())
    table = pd.DataFrame({
        "clip": names, "file": [str(p) for p in paths],
        "frames": lengths,
        "actor": [actors[n] if actors[n] is not None else "" for n in names],  # blank, not <NA>, when unknown
        "named_emotion": [named[n].emotion if named[n] else "" for n in names],
        "statistics": [_statistics_note(kind, actors[n], group_size[actors[n]]) for n in names],
        "predicted": [LABELS[i] for i in predicted],
        "folds_agreeing": [f"{n}/{k_run}" for n in agreeing],
    })
    for emotion in EMOTIONS:
        table[f"p_{emotion}"] = mean[:, LABELS.index(emotion)]
    return ClipScores(run_dir, k_run, table, aus,
                      {n: np.mean([fold[i] for fold in attention], axis=0) for i, n in enumerate(names)})
