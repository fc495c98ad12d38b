"""Posteriors and attention from a finished run (the original ``run.py inference``).

For each fold the best checkpoint is loaded (its architecture comes from the checkpoint),
applied to a partition of the clips, and the original sequenceLearning posterior files are
written, plus a tidy long table for pandas users.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aus_lib import dataset, posteriors
from aus_lib.progress import progress_bar
from aus_lib.ravdess import LABELS
from aus_lib.runs import atomic_write_csv

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
        raise FileNotFoundError(f"{path} is missing: the fold has not finished training (resume the run in "
                                "02_train_cv).")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "members" not in checkpoint:
        return [path]
    return [path.parent / member for member in checkpoint["members"]]


def fold_models(fold_dir: str | os.PathLike, device: str | torch.device = "cpu") -> list[tuple[torch.nn.Module, dict]]:
    """(model, checkpoint) of each model a fold predicts with: one, or its ensemble's members."""
    from aus_lib.checkpoints import load_checkpoint

    return [load_checkpoint(path, device) for path in member_paths(fold_dir)]


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
    run_dir = Path(run_dir)
    for name in ("config.json", "inputs.csv"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} is missing: {run_dir} is not a finished 02_train_cv run.")
    return json.loads((run_dir / "config.json").read_text()), pd.read_csv(run_dir / "inputs.csv")


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
    saved_kind, stats = normalize.statistics_from_json(json.loads(stats_file.read_text()))
    if saved_kind != kind:
        raise ValueError(f"{stats_file} holds {saved_kind!r} statistics but the run's config says {kind!r}.")
    return normalize.normalize_data(data, kind, stats)


def check_checkpoint(checkpoint: dict, path: Path, k: int, params: dict, test_actors: list[int],
                     fingerprint: str) -> None:
    """Refuse a checkpoint of another fold, configuration or data than fold ``k`` of this run."""
    from aus_lib.checkpoints import RESUMABLE_CHANGES, CheckpointError

    problems = []
    if checkpoint.get("fold") != k:
        problems.append(f"it is the checkpoint of fold {checkpoint.get('fold')}, not fold {k}")
    if list(checkpoint.get("test_actors", test_actors)) != list(test_actors):
        problems.append(f"its test actors are {checkpoint['test_actors']}, fold {k}'s are {test_actors}")
    found = checkpoint["params"]
    diffs = sorted(key for key in set(found) | set(params)
                   if key not in RESUMABLE_CHANGES and found.get(key) != params.get(key))
    if diffs:
        problems.append("its config differs from the run's config.json in "
                        + ", ".join(f"{key} ({json.dumps(found.get(key))} vs {json.dumps(params.get(key))})"
                                    for key in diffs))
    if checkpoint.get("data") is not None and checkpoint["data"] != fingerprint:
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
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "posteriors"
    data = data if data is not None else dataset.load_clips(manifest, progress=progress)
    data = actor_normalized(run_dir, params, data)
    fingerprint = data_fingerprint(data)  # of the inputs as training saw them (normalized)
    tables = []
    for k in progress_bar(range(1, k_run + 1), desc=f"Posteriors ({partition})", unit="fold", disable=not progress):
        ckpt_path = run_dir / f"fold_{k}" / "checkpoint.pt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"{ckpt_path} is missing: fold {k} of {run_dir} has not finished training "
                                    "(resume the run in 02_train_cv).")
        fold_actors = sorted(int(a) for a in manifest.loc[manifest["fold"] == k, "actor"].unique())
        members = fold_models(ckpt_path.parent)
        for path, (_, ckpt) in zip(member_paths(ckpt_path.parent), members):
            # An ensemble member differs from the run's config only in its own seed.
            expected = {**params, "seed": ckpt["params"].get("seed")} if len(members) > 1 else params
            check_checkpoint(ckpt, path, k, expected, fold_actors, fingerprint)
        idx = partition_index(manifest, k, partition)
        pred = predict_averaged(members, data.subset(idx), device=device)
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
