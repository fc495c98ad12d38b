"""Nested hyperparameter search on Optuna, from one laptop to many machines sharing a study.

A trial never sees an outer test fold: for each outer fold k it loads only the clips of fold
k's training actors, holds out inner validation actors among them (``selection="inner"``,
:func:`aus_lib.folds.split_fold`), trains, and scores the epoch early stopping keeps by its
inner-validation weighted F1. The trial's value is the mean of that score over the outer folds;
after every epoch the mean so far is reported, so the median pruner stops bad trials early. Once
the study holds its trials, the best configuration is trained once with the normal
:func:`aus_lib.train.train_cv` and evaluated on the outer test folds: that is the figure to report.

Storage: a journal file under ``outputs/sweeps/<study>/`` (no server; any number of workers on
one machine), or an SQLAlchemy URL such as ``postgresql://...`` shared by workers on many
machines. A killed worker loses only its running trial: PostgreSQL notices it through missed
heartbeats, the journal through the worker's process id; either way the trial is marked failed
and its parameters are queued again once.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from aus_lib import fold, folds, plots, runs, schedule, train
from aus_lib.config import Config, ConfigError, build_config, read_params_file, resume_hint, with_values
from aus_lib.dataset import ClipData, load_clips
from aus_lib.paths import OUTPUTS, resolve

OBJECTIVE = ("mean over the outer folds of the inner-validation weighted F1 at the epoch early stopping keeps "
             "(outer test folds never used)")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_HEARTBEAT = 60  # seconds between a PostgreSQL worker's signs of life; stale after twice that
# Median pruning from the 5th trial on, and never before a trial's 3rd epoch (Optuna prunes from
# step n_warmup_steps): the first epochs of a good configuration (a small learning rate) can look
# as bad as those of a poor one.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 3
SPEC_KEYS = {"low", "high", "log", "step", "choices"}


class SweepError(ValueError):
    """A search space, study or storage that cannot be used; the message says how to fix it."""


# --- the search space ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dimension:
    """One searched config key: a range (``low``..``high``, optionally ``log`` or ``step``) or ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial: optuna.Trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list:
        """Values that, once valid for the config, make every value of the dimension valid."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def _dimension(key: str, spec, where: str) -> Dimension:
    if not isinstance(spec, Mapping):
        raise SweepError(f"{where}: {key!r} must be an object such as {{\"low\": 1e-4, \"high\": 1e-2, \"log\": true}} "
                         f"or {{\"choices\": [32, 64]}}, got {json.dumps(spec)}.")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise SweepError(f"{where}: {key!r} has unknown field(s) {unknown}; use low/high (with log or step) or choices.")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}: {key!r}: choices must be a non-empty list, alone.")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise SweepError(f"{where}: {key!r}: choices must be numbers, strings, true/false or null; "
                             "search a nested value through its dotted key, e.g. model_params.encoder.dim.")
        return Dimension(key, choices=tuple(choices))
    numeric = all(isinstance(spec.get(b), (int, float)) and not isinstance(spec.get(b), bool) for b in ("low", "high"))
    if not numeric:
        raise SweepError(f"{where}: {key!r} needs numeric low and high (or choices).")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not low <= high:
        raise SweepError(f"{where}: {key!r}: low={low} is above high={high}.")
    if not isinstance(log, bool) or (log and low <= 0):
        raise SweepError(f"{where}: {key!r}: log must be true/false, and a log range needs low > 0.")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log):
        raise SweepError(f"{where}: {key!r}: step must be a positive number, and cannot go with log.")
    return Dimension(key, low, high, log, step)


def read_space(path: str | os.PathLike) -> dict[str, Dimension]:
    """The search space file: config key (top-level or dotted) -> range or choices."""
    path = resolve(path)
    try:
        raw = read_params_file(path)
    except ConfigError as exc:
        raise SweepError(str(exc).replace("Params file", "Search space file")) from exc
    if not raw:
        raise SweepError(f"{path}: the search space is empty; give at least one config key to search.")
    return {key: _dimension(key, spec, str(path)) for key, spec in raw.items()}


def check_space(space: Mapping[str, Dimension], base_params: Mapping, where: str) -> None:
    """Refuse, before any trial, a key the config does not know or a value it would refuse."""
    for dim in space.values():
        for value in dim.extremes():
            try:
                build_config(with_values(base_params, {dim.key: value}, where), where)
            except ConfigError as exc:
                raise SweepError(f"Search space key {dim.key!r} = {json.dumps(value)} is not a valid config: "
                                 f"{exc}") from exc


def trial_params(base_params: Mapping, values: Mapping, where: str = "<sweep>") -> dict:
    """A trial's params in the original schema: the base params with the searched values set."""
    return with_values(base_params, {**values, "selection": "inner"}, where)


# --- the nested objective -----------------------------------------------------------------------------

class InnerRun(fold.FoldRun):
    """A fold trained on an outer fold's training actors only: finishing it keeps the best epoch's
    validation scores and evaluates nothing else (there is no test set to evaluate)."""

    def kept_row(self) -> dict:
        """The history row of the epoch early stopping keeps (the last one while none improved)."""
        best = self.stopper.best_epoch
        return next((r for r in self.history if r["epoch"] == best), self.history[-1])

    def finish(self) -> fold.FoldResult:
        row = self.kept_row()
        return fold.FoldResult(self.k, pd.DataFrame(self.history, columns=list(fold.HISTORY_COLUMNS)),
                                {"fold": self.k, "best_epoch": int(row["epoch"]), "epochs_run": len(self.history),
                                 "val_f1": float(row["val_f1"]), "val_accuracy": float(row["val_accuracy"])})


class NestedObjective:
    """``objective(trial)`` for Optuna: nested CV over ``manifest``'s outer folds (see the module docstring).

    The clips of each outer fold's training part are loaded once per process (from the tensor
    cache when current) and reused by every trial.
    """

    def __init__(self, base_params: Mapping, space: Mapping[str, Dimension], manifest: pd.DataFrame,
                 where: str = "<sweep>") -> None:
        self.base_params, self.space, self.where = dict(base_params), dict(space), where
        self.manifest = manifest.reset_index(drop=True)
        self.base = build_config(trial_params(self.base_params, {}, where), where)
        self._data: dict[tuple[int, str | None], ClipData] = {}

    def fold_data(self, k: int, cfg: Config) -> tuple[ClipData, folds.FoldSplit]:
        """Outer fold k's training clips (never its test clips), scaled per actor as ``cfg`` says (as
        :func:`aus_lib.train.train_cv` does), and their inner train/validation split."""
        split = folds.split_fold(self.manifest, k, cfg)
        seen = np.sort(np.concatenate([split.train, split.val]))
        if np.isin(seen, split.test).any():
            raise RuntimeError(f"Outer fold {k}: the inner split reaches into the test fold.")
        key = (k, cfg.actor_normalization)
        if key not in self._data:
            raw = self._data.get((k, None)) or load_clips(self.manifest.iloc[seen], progress=False)
            self._data[(k, None)] = raw
            self._data[key] = train.normalize_actors(cfg, raw)  # each actor's own clips: label-free
        return self._data[key], folds.FoldSplit(np.searchsorted(seen, split.train), np.searchsorted(seen, split.val),
                                              np.array([], dtype=np.int64))

    def config(self, trial: optuna.Trial) -> Config:
        values = {key: dim.suggest(trial) for key, dim in self.space.items()}
        return build_config(trial_params(self.base_params, values, self.where), f"{self.where} (trial {trial.number})")

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        cfg = self.config(trial)
        device = fold.resolve_device(cfg.device)
        outer = sorted(folds.folds_from_manifest(self.manifest))
        with tempfile.TemporaryDirectory(prefix=f"aus-sweep-trial{trial.number}-") as scratch, \
                schedule.torch_settings(cfg):
            inner = []
            for k in outer:
                data, split = self.fold_data(k, cfg)
                inner.append(InnerRun(cfg, data, k, split, Path(scratch) / f"fold_{k}", packed=False, device=device,
                                      resume=False))
            reporter = _EpochReporter(trial, inner)
            # CPU: the folds side by side (one thread each); elsewhere one after another, epoch by epoch.
            results = schedule.train_interleaved(inner, workers=None if device.type == "cpu" else 1,
                                               on_epoch_end=reporter)
        trial.set_user_attr("fold_val_f1", {str(r.fold): r.metrics["val_f1"] for r in results})
        trial.set_user_attr("fold_best_epoch", {str(r.fold): r.metrics["best_epoch"] for r in results})
        return float(np.mean([r.metrics["val_f1"] for r in results]))


class _EpochReporter:
    """Reports, once every fold has finished epoch e (or stopped early), the mean over folds of the
    kept epoch's validation F1 so far as step e; raises ``TrialPruned`` when the pruner says so.

    Called from the threads that train the folds, each right after its fold recorded an epoch; a
    fold's progress is noted only then, so another thread's half-recorded epoch is never read.
    """

    def __init__(self, trial: optuna.Trial, inner: list[InnerRun]) -> None:
        self.trial, self.inner = trial, {run.k: run for run in inner}
        self.epochs = {k: 0 for k in self.inner}
        self.stopped = {k: False for k in self.inner}
        self.step = 0
        self.last_epoch = max(run.cfg.epochs for run in inner)
        self.lock = threading.Lock()

    def __call__(self, k: int, epoch: int, row: dict) -> None:
        with self.lock:
            self.epochs[k], self.stopped[k] = epoch, self.inner[k].done
            while all(self.epochs[j] > self.step or self.stopped[j] for j in self.inner):
                if all(self.epochs[j] <= self.step for j in self.inner):
                    return  # every fold stopped: nothing left to report
                self.step += 1
                value = np.mean([_kept_until(run, self.step) for run in self.inner.values()])
                self.trial.report(float(value), self.step)
                # At the last epoch pruning would save nothing and only hide a finished result.
                if self.step < self.last_epoch and self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {self.step} (mean inner-validation F1 {value:.4f})")


def _kept_until(run: InnerRun, epoch: int) -> float:
    """Validation F1 of the epoch early stopping kept among the first ``epoch`` epochs."""
    rows = run.history[:epoch]
    best_row, best = rows[-1], run.cfg.base
    for r in rows:  # the same rule as EarlyStopping.step
        if r["val_f1"] > best + run.cfg.min_change:
            best_row, best = r, r["val_f1"]
    return float(best_row["val_f1"])


# --- storage and the study --------------------------------------------------------------------------------

def study_dir(study: str) -> Path:
    if not study or any(c in study for c in "/\\") or study.startswith("."):
        raise SweepError(f"Study name {study!r}: use a plain name (letters, digits, - or _), it names a folder.")
    return OUTPUTS / "sweeps" / study


def open_storage(storage: str | None, folder: Path, heartbeat: int = DEFAULT_HEARTBEAT):
    """None: the journal file ``folder/journal.log``; an URL with ``://``: a database (RDBStorage with
    heartbeats); anything else: a journal file at that path."""
    if storage and "://" in storage:
        if heartbeat < 1:
            raise SweepError(f"heartbeat={heartbeat}: use at least 1 second.")
        if storage.startswith(("postgresql://", "postgres://")):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project installs psycopg2.
            storage = "postgresql+psycopg2://" + storage.split("://", 1)[1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                return optuna.storages.RDBStorage(
                    storage, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except Exception as exc:  # SQLAlchemy's and the driver's errors have no common base
            raise SweepError(f"Cannot open the study storage {_hide_password(storage)}: {exc}. Check the URL, that the "
                             "server runs and that this machine may connect to it.") from exc
    path = resolve(storage) if storage else folder / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _hide_password(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    with contextlib.suppress(OSError):  # a zombie: killed, not yet reaped by its parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


def fail_dead_workers(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Journal storage has no heartbeats: mark failed the running trials whose worker process on this
    machine is gone, and queue their parameters again once. Returns the failed trial numbers."""
    failed = []
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("host") != host or not _process_gone(int(worker.get("pid", -1))):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t.number)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, t)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return failed


def _check_setup(study: optuna.Study, setup: dict) -> None:
    """A study continues only with the search space, base configuration and data it started with."""
    old = study.user_attrs.get("setup")
    if old is None:
        study.set_user_attr("setup", setup)
        return
    diffs = sorted(k for k in set(old["fingerprint"]) | set(setup["fingerprint"])
                   if old["fingerprint"].get(k) != setup["fingerprint"].get(k))
    if old["space"] != setup["space"]:
        diffs.insert(0, "search space")
    if diffs:
        raise SweepError(f"Study {study.study_name!r} was started with other settings (differs in {', '.join(diffs)}"
                         f"{resume_hint(old['fingerprint'], diffs)}); its trials would not be comparable. Use the same "
                         "files and options, or another --study name.")


# --- results ---------------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    study: optuna.Study
    folder: Path
    trials: pd.DataFrame
    best_params: dict | None        # original params schema
    final: dict | None              # the outer-fold evaluation of the best configuration


def write_results(study: optuna.Study, folder: Path, base_params: Mapping, where: str) -> tuple[pd.DataFrame, dict | None]:
    """trials.csv, the figures and best_params.json (atomic writes: workers may do this at once)."""
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as ovm

    trials = study.trials_dataframe()
    runs.atomic_write_csv(folder / "trials.csv", trials, index=False)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return trials, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures = {"optimization_history": ovm.plot_optimization_history}
        if len(complete) >= 2 and any(len({repr(t.params.get(k)) for t in complete}) > 1 for k in complete[0].params):
            figures["param_importances"] = ovm.plot_param_importances
        for name, draw in figures.items():
            ax = draw(study)
            fig = ax.figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            plots.save(fig, folder / f"{name}.png")
            pyplot.close(fig)
    best = study.best_trial
    params = build_config(trial_params(base_params, {**best.params, "name": f"{study.study_name}-trial{best.number}"},
                                       where), where).to_params()
    runs.atomic_write_json(folder / "best_params.json", params)
    return trials, params


def final_evaluation(study: optuna.Study, best_params: dict, manifest: pd.DataFrame, folder: Path,
                     progress: bool = True) -> dict:
    """Train the best configuration once with :func:`aus_lib.train.train_cv` and evaluate it on the outer
    test folds; writes ``final_evaluation.csv`` / ``.json``. Workers on one machine take turns (a lock
    file), so it runs once; an interrupted evaluation resumes."""
    cfg = build_config(best_params, str(folder / "best_params.json"))
    number = study.best_trial.number
    with open(folder / ".final_evaluation.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_dir = runs.prepare_run_dir(folder, f"final-trial{number}", train.run_fingerprint(cfg, manifest),
                                       resume=True)
        if runs.is_done(run_dir):
            table = pd.read_csv(run_dir / "cv_results.csv", index_col="fold")
        else:
            table = train.train_cv(cfg, manifest, run_dir, progress=progress).table
        runs.atomic_write_csv(folder / "final_evaluation.csv", table, index_label="fold")
        per_fold = table.drop(index=["mean", "std"])
        summary = {"trial": number, "search_value": study.best_value, "objective": OBJECTIVE,
                   "protocol": "the best configuration trained once per outer fold (selection='inner'); "
                               "scores on the outer test folds, which the search never saw",
                   **{f"{m}_{s}": float(table.loc[s, m]) for m in ("accuracy", "f1") for s in ("mean", "std")},
                   "folds": int(len(per_fold)), "run_dir": str(run_dir), "params": best_params}
        runs.atomic_write_json(folder / "final_evaluation.json", summary)
    return summary


# --- the driver ---------------------------------------------------------------------------------------------------

def run_sweep(space_file: str | os.PathLike, study: str, n_trials: int, *, storage: str | None = None,
              base_params: str | os.PathLike = "params/RAVDESS_AUs.json", overrides: Mapping[str, Any] | None = None,
              folds_dir: str | os.PathLike | None = None, aus_dir: str | os.PathLike | None = None,
              final: bool = True, heartbeat: int = DEFAULT_HEARTBEAT, progress: bool = True,
              log: Callable[[str], None] = print) -> SweepResult:
    """Work on study ``study`` until it holds ``n_trials`` finished (complete or pruned) trials, then
    write the results and, with ``final``, the outer-fold evaluation of the best configuration.

    Every worker runs this same call; they share the study through ``storage``. ``overrides`` (e.g.
    ``{"epochs": 20, "kfolds": 5}``, dotted keys allowed, None ignored) apply to every trial.
    """
    if n_trials < 0:
        raise SweepError(f"n_trials={n_trials}: use 0 or more (the number of finished trials the study should hold).")
    folder = study_dir(study)
    base_file = resolve(base_params)
    where = str(base_file)
    params = with_values(read_params_file(base_file),
                         {k: v for k, v in (overrides or {}).items() if v is not None}, where)
    space = read_space(space_file)
    check_space(space, params, where)
    base_cfg = build_config(trial_params(params, {}, where), where)
    if folds_dir is None:  # the user's data gets its own fold lists, never the synthetic set's
        folds_dir = folder / "folds" if aus_dir else OUTPUTS / "folds" / f"synthetic_{base_cfg.kfolds}CV"
    folds_dir = resolve(folds_dir)
    manifest = folds.load_or_make(folds_dir, base_cfg.kfolds, aus_dir=resolve(aus_dir), seed=base_cfg.seed)
    # The data decides the AU set (35 OpenFace columns, 20 py-feat probabilities), as in train_cv.
    params = with_values(params, {"input_size": train.fit_input_size(base_cfg, manifest).input_size}, where)
    base_cfg = build_config(trial_params(params, {}, where), where)
    objective = NestedObjective(params, space, manifest, where)

    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(storage, folder, heartbeat)
    the_study = optuna.create_study(
        study_name=study, storage=opened, direction="maximize", load_if_exists=True,
        # constant_liar: workers sampling at the same time avoid proposing the same point.
        sampler=optuna.samplers.TPESampler(constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=PRUNER_WARMUP_EPOCHS))
    _check_setup(the_study, {"space": read_params_file(resolve(space_file)),
                             "fingerprint": train.run_fingerprint(base_cfg, manifest)})
    if isinstance(opened, optuna.storages.JournalStorage):
        for number in fail_dead_workers(the_study, opened):
            log(f"trial {number}: its worker is gone; marked FAIL and queued again")

    def finished() -> int:
        return len(the_study.get_trials(deepcopy=False, states=FINISHED))

    def report(st: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        value = "" if t.value is None else f" value {t.value:.4f}"
        log(f"trial {t.number} {t.state.name}{value} {json.dumps(t.params)}")

    remaining = n_trials - finished()
    log(f"study {study!r}: {finished()} of {n_trials} trials finished; objective: {OBJECTIVE}")
    if remaining > 0:
        # Running trials of other workers count too, so the workers together stop at n_trials.
        enough = optuna.study.MaxTrialsCallback(n_trials, states=(*FINISHED, TrialState.RUNNING))
        the_study.optimize(objective, n_trials=remaining, callbacks=[report, enough], gc_after_trial=False)

    trials, best = write_results(the_study, folder, params, where)
    summary = None
    if best is None:
        log("no trial has completed yet: nothing to evaluate")
    elif finished() < n_trials:
        log(f"{n_trials - finished()} trial(s) still running elsewhere or to rerun: run the command again to "
            "finish the study; the final evaluation waits for it")
    elif final:
        summary = final_evaluation(the_study, best, manifest, folder, progress=progress)
        log(f"best trial {summary['trial']} (search value {summary['search_value']:.4f}); outer-fold evaluation: "
            f"accuracy {100 * summary['accuracy_mean']:.2f} ± {100 * summary['accuracy_std']:.2f} %, "
            f"F1 {100 * summary['f1_mean']:.2f} ± {100 * summary['f1_std']:.2f} % over {summary['folds']} folds")
    log(f"results in {folder}")
    return SweepResult(the_study, folder, trials, best, summary)
