"""Subject-wise K-fold cross-validation of ``Sequence1Modal``: the original ``run.py train RAVDESS_AUs.json --kfolds 5``.

:func:`train_cv` checks that the run can start (or resume), splits the folds, hands them to
:func:`aus_lib.schedule.run_folds` (which runs :meth:`aus_lib.fold.FoldRun.run_epoch`, the epoch
loop) and writes the CV table. ``cfg.final_fit`` completes the nested protocol: ``"refit"``
trains each fold again on all its training actors for the epoch count its inner validation
chose; ``"ensemble"`` averages the test posteriors of ``cfg.ensemble_size`` inner-validated
members.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from aus_lib import analysis, normalize, runs
from aus_lib.checkpoints import RESUMABLE_CHANGES, data_fingerprint, differences, load_checkpoint
from aus_lib.config import Config, resume_hint
from aus_lib.dataset import ClipData, au_columns, describe_data, load_clips
from aus_lib.fold import (METRICS, EpochHook, FoldJob, FoldResult, TrainError, actors_of, class_weights,
                          clip_probabilities, fold_figures, fold_tensors, resolve_device)
from aus_lib.folds import (FoldSplit, assign_folds, check_training_emotions, folds_from_manifest, make_folds,
                           split_fold)
from aus_lib.progress import training_bar
from aus_lib.ravdess import LABELS
from aus_lib.schedule import run_folds, torch_settings

QUIET_MININTERVAL = 10.0  # seconds between progress refreshes when nobody watches a terminal

@dataclass
class CVResult:
    table: pd.DataFrame                  # one row per fold, then "mean" and "std"
    histories: dict[int, pd.DataFrame]
    run_dir: Path



def environment(device: torch.device) -> dict:
    from importlib.metadata import version  # importing scikit-learn for its version would cost ~70 MB

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "sklearn": version("scikit-learn"), "platform": platform.platform(),
            "device": str(device), "device_name": name, "threads": torch.get_num_threads()}



def _with_folds(cfg: Config, manifest: pd.DataFrame, folds) -> pd.DataFrame:
    if isinstance(folds, Mapping):
        manifest = assign_folds(manifest, folds)
    elif "fold" not in manifest:
        clips_per_actor = manifest["actor"].value_counts().to_dict()
        manifest = assign_folds(manifest, make_folds(clips_per_actor, cfg.kfolds, cfg.seed))
    found = sorted(folds_from_manifest(manifest))
    if found != list(range(1, cfg.kfolds + 1)):
        raise TrainError(f"The manifest's folds are {found} but kfolds={cfg.kfolds}. Make the folds with "
                         f"kfolds={cfg.kfolds} (notebook 01_make_folds) or set kfolds={len(found)}.")
    if "emotion" in manifest:
        check_training_emotions(manifest)
    return manifest



def fit_input_size(cfg: Config, manifest: pd.DataFrame) -> Config:
    """``cfg`` with ``input_size`` set to the AU set of the manifest's clips (35 OpenFace columns,
    20 py-feat probabilities): the data decides, so one params file serves both formats."""
    return cfg.replace(input_size=len(au_columns(manifest)))



def run_fingerprint(cfg: Config, manifest: pd.DataFrame) -> dict:
    """What a run folder must match to be resumed (for :func:`aus_lib.runs.prepare_run_dir`):
    the configuration (but device and threads), the folds' test actors, the clips and which data
    they are. Everything that can be checked without training is checked here first, so that
    no run folder is made for a run that cannot start."""
    cfg = fit_input_size(cfg, manifest)
    manifest = _with_folds(cfg, manifest.reset_index(drop=True), None)
    resolve_device(cfg.device)
    for k in range(1, cfg.kfolds + 1):
        split_fold(manifest, k, cfg)
    digest = hashlib.blake2b(digest_size=12)
    for clip, fold in zip(manifest["clip"], manifest["fold"]):
        digest.update(f"{clip}:{int(fold)};".encode())
    params = {k: v for k, v in cfg.to_params().items() if k not in RESUMABLE_CHANGES}
    folds = {str(k): [int(a) for a in actors] for k, actors in folds_from_manifest(manifest).items()}
    return {"data": describe_data(manifest), **params, "folds": folds,
            "clips": f"{len(manifest)} clips, {digest.hexdigest()}"}



def _check_resumable(run_dir: Path, params: dict, manifest: pd.DataFrame) -> None:
    """Refuse to continue a run folder that holds a different configuration or data split."""
    config_file, inputs_file = runs.Run(run_dir).config_file, runs.Run(run_dir).inputs_file
    if config_file.is_file():
        old = json.loads(config_file.read_text())
        diffs = differences(old, params)
        if diffs:
            raise TrainError(f"{config_file} differs from this run's configuration in {', '.join(diffs)}"
                             f"{resume_hint(old, diffs)}. Use another run folder, or resume=False to start it again.")
    if inputs_file.is_file():
        old = pd.read_csv(inputs_file, usecols=["clip", "fold"])
        if list(zip(old["clip"], old["fold"])) != list(zip(manifest["clip"], manifest["fold"])):
            raise TrainError(f"{inputs_file} lists other clips or folds than this run's manifest. "
                             "Use another run folder, or resume=False to start it again.")



def _fold_from_disk(fold_dir: Path, name: str) -> FoldResult:
    """A finished fold read back; its figures drawn if the run that finished it stopped before drawing them."""
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    if not (fold_dir / "confusion.png").is_file():
        fold_figures(fold_dir, name)
    return FoldResult(int(metrics["fold"]), pd.read_csv(fold_dir / "history.csv"), metrics)



def _run_or_read(cfg: Config, data: ClipData, jobs: list[FoldJob], device: torch.device, resume: bool,
                 bar: tqdm | None, on_epoch_end: EpochHook | None) -> list[FoldResult]:
    """Train ``jobs`` (or read back the finished ones); results in the order of ``jobs``."""
    done = {job.fold_dir: _fold_from_disk(job.fold_dir, (job.cfg or cfg).name)
            for job in jobs if resume and runs.is_done(job.fold_dir)}
    if bar is not None:
        bar.update(cfg.epochs * len(done))
    todo = [job for job in jobs if job.fold_dir not in done]
    trained = run_folds(cfg, data, todo, device=device, resume=resume, bar=bar, on_epoch_end=on_epoch_end)
    done.update({job.fold_dir: result for job, result in zip(todo, trained)})
    return [done[job.fold_dir] for job in jobs]



def member_seed(seed: int, member: int) -> int:
    """Ensemble member ``member``'s seed: member 0 is the run itself, the others follow it."""
    return seed + member



def member_job(cfg: Config, manifest: pd.DataFrame, job: FoldJob, member: int) -> FoldJob:
    """Member ``member`` of fold ``job.k``'s ensemble (``final_fit="ensemble"``): its own seed, so its own
    inner validation actors (or clips), initial weights, batches and dropout; trained with early
    stopping on its inner validation like any fold, in ``fold_<k>/member_<m>``."""
    member_cfg = cfg.replace(seed=member_seed(cfg.seed, member))
    return FoldJob(job.k, split_fold(manifest, job.k, member_cfg), job.fold_dir / f"member_{member}", cfg=member_cfg)



def ensemble_fold(cfg: Config, data: ClipData, job: FoldJob, device: torch.device) -> FoldResult:
    """Fold ``job.k`` of an ensemble run: the members' test posteriors averaged, the fold's files written.

    ``fold_<k>/checkpoint.pt`` then lists the members' checkpoints instead of holding weights
    (:func:`aus_lib.inference.fold_models` loads them); each member's own files stay in its folder."""
    member_dirs = [job.fold_dir / f"member_{m}" for m in range(cfg.ensemble_size)]
    test = job.split.test
    probabilities, member_metrics = [], []
    for member_dir in member_dirs:
        model, checkpoint = load_checkpoint(member_dir / "checkpoint.pt", device)
        tensors = fold_tensors(data, checkpoint.get("normalization"), device)
        probabilities.append(clip_probabilities(model, tensors, test))
        member_metrics.append(checkpoint["metrics"])
    y_true = data.labels[test]
    averaged = np.mean(probabilities, axis=0)
    y_pred = averaged.argmax(axis=1)
    scores = analysis.classification_metrics(y_true, y_pred)
    # Class-weighted cross-entropy of the averaged posteriors, the weights balanced over all the fold's training
    # actors (each member balanced over its own inner-training part, which differs by member).
    weights = class_weights(data.labels[np.concatenate([job.split.train, job.split.val])]).numpy().astype(np.float64)
    nll = -np.log(np.clip(averaged[np.arange(len(test)), y_true], 1e-12, None))
    scores["loss"] = float((weights[y_true] * nll).sum() / weights[y_true].sum())
    first = member_metrics[0]
    metrics = {"fold": job.k, "selection": cfg.selection, "final_fit": "ensemble", "partition": "test",
               "best_epoch": int(first["best_epoch"]), "epochs_run": int(first["epochs_run"]),
               **{m: scores[m] for m in ("n", *METRICS)},
               "val_f1": float(np.mean([m["val_f1"] for m in member_metrics])),
               "train_actors": sorted(set(first["train_actors"]) | set(first["val_actors"])), "val_actors": [],
               "test_actors": actors_of(data, test), "members": len(member_dirs),
               "member_best_epochs": [int(m["best_epoch"]) for m in member_metrics],
               "member_val_actors": [m["val_actors"] for m in member_metrics],
               "member_test_accuracy": [float(m["accuracy"]) for m in member_metrics],
               "note": cfg.selection_note}
    runs.atomic_torch_save(job.fold_dir / "checkpoint.pt", {
        "members": [str(d.relative_to(job.fold_dir) / "checkpoint.pt") for d in member_dirs],
        "params": cfg.to_params(), "labels": list(LABELS), "fold": job.k, "metrics": metrics,
        "test_actors": metrics["test_actors"], "data": data_fingerprint(data)})
    history = pd.read_csv(member_dirs[0] / "history.csv")
    runs.atomic_write_csv(job.fold_dir / "history.csv", history, index=False)
    cm = analysis.confusion(y_true, y_pred).reindex(index=list(LABELS), columns=list(LABELS))
    runs.atomic_write_csv(job.fold_dir / "confusion.csv", cm)
    from aus_lib import plots  # deferred, as in fold.fold_figures: training needs no matplotlib

    plots.confusion_matrix(cm, f"Fold {job.k}: test, ensemble of {len(member_dirs)} ({cfg.name})",
                           path=job.fold_dir / "confusion.png")
    runs.atomic_write_json(job.fold_dir / "metrics.json", metrics)
    runs.mark_done(job.fold_dir, {"members": len(member_dirs), "f1": scores["f1"]})
    return FoldResult(job.k, history, metrics)



def refit_job(cfg: Config, inner_job: FoldJob, inner: FoldResult) -> FoldJob:
    """The second half of ``final_fit="refit"``: the fold trained again on all its training actors
    (inner training + inner validation) for the epoch count the inner validation chose, with no
    validation and no early stopping; the last epoch is the fold's model."""
    split = inner_job.split
    every_train = np.sort(np.concatenate([split.train, split.val]))
    return FoldJob(inner_job.k, FoldSplit(every_train, every_train[:0], split.test), inner_job.fold_dir.parent,
                   int(inner.metrics["best_epoch"]))



def normalize_actors(cfg: Config, data: ClipData, run_dir: Path | None = None) -> ClipData:
    """``data`` with ``cfg.actor_normalization`` applied (label-free per-actor statistics of each
    actor's own clips); the statistics are saved as ``run_dir/actor_normalization.json``."""
    if cfg.actor_normalization is None:
        return data
    stats = normalize.statistics_of(data, cfg.actor_normalization)
    if run_dir is not None:
        runs.atomic_write_json(Path(run_dir) / normalize.ACTOR_STATS_FILE,
                               normalize.statistics_to_json(stats, cfg.actor_normalization, data.columns))
    return normalize.normalize_data(data, cfg.actor_normalization, stats)



def cv_table(results: Iterable[FoldResult]) -> pd.DataFrame:
    """Per-fold test metrics at the best epoch, then their mean and standard deviation (ddof=1)."""
    table = pd.DataFrame([{"fold": r.fold, **{m: r.metrics[m] for m in METRICS},
                           "best_epoch": r.metrics["best_epoch"], "epochs_run": r.metrics["epochs_run"]}
                          for r in results]).set_index("fold")
    return pd.concat([table, table.agg(["mean", "std"])])



def train_cv(cfg: Config, manifest: pd.DataFrame, run_dir: str | os.PathLike, data: ClipData | None = None,
             folds: Mapping[int, Iterable[int]] | Iterable[int] | None = None, progress: bool = True, *,
             resume: bool = True, on_epoch_end: EpochHook | None = None) -> CVResult:
    """Cross-validate ``cfg`` over the manifest's actor-disjoint folds; write everything to ``run_dir``.

    Fold assignment: the manifest's ``fold`` column, or ``folds`` given as a mapping fold -> test
    actors, or else :func:`aus_lib.folds.make_folds` with ``cfg.kfolds`` and ``cfg.seed``.
    ``folds`` given as fold numbers trains only those folds (the run is marked done only when
    every fold is). ``data`` is ``load_clips(manifest)`` when not given; it must be in manifest
    order. With ``resume`` finished folds (``fold_<k>/DONE``) are read back and an interrupted
    fold continues from its last saved epoch.
    """
    run_dir = Path(run_dir)
    cfg = fit_input_size(cfg, manifest)
    manifest = _with_folds(cfg, manifest.reset_index(drop=True), folds)
    only = None if folds is None or isinstance(folds, Mapping) else sorted(int(k) for k in folds)
    to_run = only or list(range(1, cfg.kfolds + 1))
    unknown = sorted(set(to_run) - set(range(1, cfg.kfolds + 1)))
    if unknown:
        raise TrainError(f"folds={to_run}: fold(s) {unknown} do not exist; the folds are 1..{cfg.kfolds}.")
    if data is None:
        data = load_clips(manifest, progress=progress)
    if list(data.names) != list(manifest["clip"]):
        raise TrainError("data does not match the manifest (other clips or another order): pass "
                         "data=load_clips(manifest) for this manifest, or leave data=None.")
    params = cfg.to_params()
    if resume:
        _check_resumable(run_dir, params, manifest)
    device = resolve_device(cfg.device)
    data = normalize_actors(cfg, data, run_dir)

    with torch_settings(cfg):
        runs.atomic_write_json(runs.Run(run_dir).config_file, params)
        runs.atomic_write_csv(runs.Run(run_dir).inputs_file, manifest, index=False)
        runs.atomic_write_json(run_dir / "environment.json", environment(device))
        interactive = sys.stderr.isatty()
        phases = {"inner": 1, "refit": 2, "ensemble": cfg.ensemble_size}[cfg.final_fit]
        bar = training_bar(len(to_run) * cfg.epochs * phases, f"{cfg.name} {len(to_run)}-fold CV", enabled=progress,
                           mininterval=0.1 if interactive else QUIET_MININTERVAL)
        results: list[FoldResult] = []
        jobs: list[FoldJob] = []
        try:
            for k in to_run:
                fold_dir = runs.Run(run_dir).fold_dir(k)
                if resume and runs.is_done(fold_dir):
                    results.append(_fold_from_disk(fold_dir, cfg.name))
                    bar.update(cfg.epochs * phases)
                else:
                    jobs.append(FoldJob(k, split_fold(manifest, k, cfg), fold_dir))
            if cfg.final_fit == "refit":
                jobs = [FoldJob(job.k, job.split, job.fold_dir / "inner") for job in jobs]
                inner = _run_or_read(cfg, data, jobs, device, resume, bar, on_epoch_end)
                jobs = [refit_job(cfg, job, result) for job, result in zip(jobs, inner)]
            if cfg.final_fit == "ensemble":
                members = [member_job(cfg, manifest, job, m) for job in jobs for m in range(cfg.ensemble_size)]
                _run_or_read(cfg, data, members, device, resume, bar, on_epoch_end)
                trained = [ensemble_fold(cfg, data, job, device) for job in jobs]
            else:
                trained = run_folds(cfg, data, jobs, device=device, resume=resume, bar=bar, on_epoch_end=on_epoch_end)
            if progress:
                for result in trained:
                    m = result.metrics
                    bar.write(f"fold {result.fold}: accuracy {m['accuracy']:.3f}  f1 {m['f1']:.3f}  "
                              f"best epoch {m['best_epoch']}/{m['epochs_run']}")
            results = sorted(results + trained, key=lambda r: r.fold)
        except runs.OutputDirError as exc:
            raise runs.OutputDirError(exc.errno, f"{exc.strerror} Finished epochs and folds are kept in {run_dir}: "
                                      f"continue with resume=True and run_name={run_dir.name!r} (CLI: --resume "
                                      f"--run-name {run_dir.name}).") from exc
        finally:
            bar.close()
            runs.release(run_dir)

    table = cv_table(results)
    runs.atomic_write_csv(run_dir / "cv_results.csv", table, index_label="fold")
    if all(runs.is_done(runs.Run(run_dir).fold_dir(k)) for k in range(1, cfg.kfolds + 1)):
        runs.mark_done(run_dir, {m: float(table.loc["mean", m]) for m in METRICS})
    return CVResult(table, {r.fold: r.history for r in results}, run_dir)
