"""One fold of the subject-wise cross-validation: the original ``run.py train``'s inner loop.

One fold: class-weighted cross-entropy, Adam, gradient-norm clipping, random mini-batches cut
from the cached padded tensors, validation after every epoch, early stopping on weighted F1,
the best epoch's weights kept. Everything a fold needs to continue after an interruption is
saved at the end of every epoch (``fold_<k>/state.pt``), and every random draw of an epoch is
seeded from ``(seed, fold, epoch)`` (its own generators, never the global RNG), so a resumed fold
ends exactly where an uninterrupted one would, and a fold's result does not depend on which
folds ran before it, or beside it.

Reading order: :func:`train_epoch` (one pass over the training clips) and :func:`evaluate`;
:class:`FoldRun` (one fold's state, advanced by :meth:`FoldRun.run_epoch`); :func:`train_fold`
(a fold trained alone to the end). How several folds are scheduled is :mod:`aus_lib.schedule`,
the cross-validation run around them :mod:`aus_lib.train`.

Which clips a fold trains, validates and tests on (``cfg.selection``) is
:func:`aus_lib.folds.split_fold`:

* ``"test_fold"`` (the original): the test fold is also the validation set, so early stopping
  and the checkpoint are chosen on it and the reported scores are optimistic;
* ``"inner"``: ``cfg.inner_val_actors`` whole actors of the training part are held out for
  early stopping and the checkpoint; the test fold is evaluated once, with the best checkpoint.
"""
from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aus_lib import analysis, runs
from aus_lib.checkpoints import apply_normalization, data_fingerprint, differences
from aus_lib.config import Config, resume_hint
from aus_lib.dataset import ClipData
from aus_lib.folds import FoldSplit
from aus_lib.model import BatchMasks, DropoutNoise, Sequence1Modal
from aus_lib.ravdess import LABELS

METRICS = ("accuracy", "precision", "recall", "f1", "uar", "loss")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_precision",
                   "val_recall", "val_f1", "best", "seconds")
# Evaluation batch size. Not larger: on the CPU the LSTM is no faster per clip in bigger batches,
# and a batch of 256 clips peaks at ~110 MB against ~30 MB for 64 (two folds train side by side).
EVAL_BATCH = 64
# Clips per forward/backward pass on the CPU (micro_batch="auto"). Measured on a 2-core Xeon (bench/): oneDNN's
# LSTM backward is a third faster per clip in passes of 16-32 clips than of 64, and a pass's saved activations
# (the LSTM workspaces: ~150 MB for 64 clips) shrink with it.
AUTO_MICRO_BATCH = 16
NOISE_STREAM = 1          # mixed into an epoch's seed for its dropout generator (the order uses the seed itself)
# Model construction draws the initial weights from the global RNG: one fold at a time.
_GLOBAL_RNG = threading.Lock()


class TrainError(ValueError):
    """Training cannot start or continue; the message says why and how to fix it."""

# --- device, seeds ----------------------------------------------------------------------------

def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` = the first CUDA GPU when there is one, else the CPU; ``"cpu"``; ``"cuda[:N]"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise TrainError(f"device={name!r} but CUDA is not available (torch {torch.__version__}, {build}). "
                             "Use device='auto' or 'cpu', or install a CUDA build of torch on a machine with a GPU.")
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise TrainError(f"device={name!r} is not a valid device name; use 'cuda' or 'cuda:N'.") from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) are visible.")
        return device
    raise TrainError(f"device={name!r}: use 'auto', 'cpu' or 'cuda[:N]'.")


def fold_seed(seed: int, k: int, *more: int) -> int:
    """A seed derived from ``(seed, k, *more)`` only; ``fold_seed(seed, k, epoch)`` seeds one epoch."""
    if seed < 0:
        raise TrainError(f"seed={seed}: use a non-negative integer seed.")
    return int(np.random.SeedSequence([seed, k, *more]).generate_state(1)[0])

# --- class weights, input scaling -------------------------------------------------------------

def class_weights(labels: np.ndarray, n_classes: int = len(LABELS)) -> torch.Tensor:
    """Balanced weights ``n / (C * count_c)`` over the C classes present; absent classes get 0."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)



def fit_normalization(data: ClipData, index: np.ndarray, kind: str | None) -> dict | None:
    """Per-feature ``mean``/``scale`` fitted on the real frames of clips ``index`` (None: no scaling).

    ``"standard"``: mean and standard deviation; ``"minmax"``: minimum and range. A constant
    feature gets scale 1, so it maps to 0 instead of dividing by zero.
    """
    if kind is None:
        return None
    if kind not in ("standard", "minmax"):
        raise TrainError(f"preprocessor={kind!r}: use null, 'standard' or 'minmax'.")
    frames = np.concatenate([data.clip(i) for i in index]).astype(np.float64)
    if kind == "standard":
        mean, scale = frames.mean(0), frames.std(0)
    else:
        mean, scale = frames.min(0), frames.max(0) - frames.min(0)
    scale[scale == 0] = 1.0
    return {"kind": kind, "mean": torch.tensor(mean, dtype=torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float32)}


# --- early stopping ---------------------------------------------------------------------------

class EarlyStopping:
    """Keeps the best epoch by validation F1; stops after ``patience`` epochs without improvement.

    An epoch improves when ``f1 > best + min_change``; ``best`` starts at ``base``.
    ``patience=-1`` never stops (the caller still stops at ``epochs``).
    """

    def __init__(self, patience: int, min_change: float = 0.0, base: float = 0.0) -> None:
        if patience != -1 and patience < 1:
            raise TrainError(f"patience={patience}: use >= 1, or -1 to disable early stopping.")
        self.patience = patience
        self.min_change = min_change
        self.best = float(base)
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def step(self, epoch: int, f1: float) -> bool:
        """Record one epoch's F1; True when it became the best so far."""
        if f1 > self.best + self.min_change:
            self.best, self.best_epoch, self.bad_epochs = float(f1), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience != -1 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"patience": self.patience, "min_change": self.min_change, "best": self.best,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping) -> None:
        for key in ("patience", "min_change", "best", "best_epoch", "bad_epochs"):
            setattr(self, key, state[key])

# --- one epoch --------------------------------------------------------------------------------

@dataclass
class FoldTensors:
    """The whole data set on the device, scaled for one fold."""

    features: torch.Tensor  # [N, T, 35]
    lengths: torch.Tensor   # [N] on the device
    labels: torch.Tensor    # [N]
    host_lengths: np.ndarray  # the same lengths on the host, to cut batches without a device sync

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def frames(self) -> int:
        """The padded length: every clip fits, and training draws its dropout masks at it."""
        return self.features.size(1)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clips ``index``, cut to the longest of them."""
        frames = int(self.host_lengths[index].max())
        idx = torch.from_numpy(index).to(self.features.device)
        return self.features[idx, :frames], self.lengths[idx], self.labels[idx]



def fold_tensors(data: ClipData, normalization: dict | None, device: torch.device) -> FoldTensors:
    lengths = torch.from_numpy(np.asarray(data.lengths, dtype=np.int64))
    features = apply_normalization(torch.from_numpy(data.features), lengths, normalization)
    return FoldTensors(features.to(device), lengths.to(device),
                       torch.from_numpy(np.asarray(data.labels, dtype=np.int64)).to(device),
                       np.asarray(data.lengths, dtype=np.int64))



@torch.no_grad()
def evaluate(model: Sequence1Modal, tensors: FoldTensors, index: np.ndarray,
             weights: torch.Tensor) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics incl. weighted loss, y_true, y_pred) of clips ``index``, in eval mode."""
    model.eval()
    # Sorting by length keeps padding (and so wasted work) small; the metrics ignore the order.
    order = index[np.argsort(tensors.host_lengths[index], kind="stable")]
    loss_sum = torch.zeros((), device=weights.device)
    weight_sum = torch.zeros((), device=weights.device)
    preds = []
    for start in range(0, len(order), EVAL_BATCH):
        x, lengths, y = tensors.batch(order[start:start + EVAL_BATCH])
        logits, _ = model(x, lengths)
        loss_sum += F.cross_entropy(logits, y, weight=weights, reduction="sum")
        weight_sum += weights[y].sum()
        preds.append(logits.argmax(1))
    y_true = tensors.labels[torch.from_numpy(order).to(tensors.labels.device)].cpu().numpy()
    y_pred = torch.cat(preds).cpu().numpy()
    metrics = analysis.classification_metrics(y_true, y_pred)
    metrics["loss"] = float(loss_sum / weight_sum)
    return metrics, y_true, y_pred



@torch.no_grad()
def clip_probabilities(model: Sequence1Modal, tensors: FoldTensors, index: np.ndarray) -> np.ndarray:
    """Softmax posteriors [len(index), classes] of clips ``index``, in that order (eval mode)."""
    model.eval()
    out = np.zeros((len(index), len(LABELS)), dtype=np.float64)
    for start in range(0, len(index), EVAL_BATCH):
        x, lengths, _ = tensors.batch(index[start:start + EVAL_BATCH])
        logits, _ = model(x, lengths)
        out[start:start + len(x)] = torch.softmax(logits.double(), dim=1).cpu().numpy()
    return out



def batch_order(index: np.ndarray, epoch_seed: int) -> np.ndarray:
    """The clips of ``index`` in one epoch's random order (mini-batches are consecutive slices)."""
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(epoch_seed)).numpy()]



def epoch_noise(epoch_seed: int, device: torch.device, frames: int) -> DropoutNoise:
    """The dropout masks of one epoch: their own generator, seeded from the epoch's seed only."""
    seed = int(np.random.SeedSequence([epoch_seed, NOISE_STREAM]).generate_state(1)[0])
    return DropoutNoise(torch.Generator(device=device).manual_seed(seed), frames)



def micro_batch_size(cfg: Config, device: torch.device) -> int:
    """Clips per forward/backward pass (``cfg.micro_batch``): "auto" = :data:`AUTO_MICRO_BATCH` on the
    CPU and whole batches elsewhere (a GPU wants large passes); null = whole batches."""
    if cfg.micro_batch is None or (cfg.micro_batch == "auto" and device.type != "cpu"):
        return cfg.batch_size
    return min(cfg.batch_size, AUTO_MICRO_BATCH if cfg.micro_batch == "auto" else cfg.micro_batch)


def train_epoch(model: Sequence1Modal, optimizer: torch.optim.Optimizer, tensors: FoldTensors,
                index: np.ndarray, weights: torch.Tensor, cfg: Config, epoch_seed: int) -> tuple[float, float]:
    """One pass over ``index`` in random mini-batches; (weighted mean loss, accuracy) as accumulated.

    The order and the dropout masks come from generators seeded with ``epoch_seed`` alone (never
    the global RNG), so folds trained side by side in threads cannot disturb each other. A batch
    runs forward and backward in chunks of :func:`micro_batch_size` clips with the masks the whole
    batch draws, each chunk's loss divided by the whole batch's weight: the gradients sum to the
    whole batch's (up to float rounding) before its one optimizer step.
    """
    model.train()
    order = batch_order(index, epoch_seed)
    noise = epoch_noise(epoch_seed, tensors.device, tensors.frames)
    sites = model.dropout_sites()
    chunk = micro_batch_size(cfg, tensors.device)
    sums = torch.zeros(3, device=weights.device)  # weighted loss, weight, correct
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start:start + cfg.batch_size]
        weight_sum = weights[tensors.labels[torch.from_numpy(batch).to(tensors.device)]].sum()
        masks = BatchMasks(noise, sites, len(batch), int(tensors.host_lengths[batch].max()), tensors.device)
        optimizer.zero_grad(set_to_none=True)
        for part in range(0, len(batch), chunk):
            x, lengths, y = tensors.batch(batch[part:part + chunk])
            logits, _ = model(x, lengths, masks.chunk(part, part + len(y)))
            loss_sum = F.cross_entropy(logits, y, weight=weights, reduction="sum")
            (loss_sum / weight_sum).backward()  # whole: = cross_entropy(..., reduction="mean") with weights
            sums += torch.stack([loss_sum.detach(), weights[y].sum(), (logits.argmax(1) == y).sum()])
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
    loss, weight, correct = sums.tolist()
    return loss / weight, correct / len(order)


# --- one fold ---------------------------------------------------------------------------------

@dataclass
class FoldResult:
    fold: int
    history: pd.DataFrame
    metrics: dict  # as in metrics.json



EpochHook = Callable[[int, int, dict], None]  # (fold, epoch, history row), after state.pt is saved



@dataclass
class FoldJob:
    """A fold to train: its number, its split and its output folder."""

    k: int
    split: FoldSplit
    fold_dir: Path
    epochs: int | None = None  # a refit's fixed epoch count; None = cfg.epochs with early stopping
    cfg: Config | None = None  # an ensemble member's own config (its seed); None = the run's



def actors_of(data: ClipData, index: np.ndarray) -> list[int]:
    return sorted(int(a) for a in np.unique(data.actors[index]))



def _plain(state: Mapping) -> dict:
    """A state_dict detached and on the CPU, so it saves and loads anywhere."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}



def initial_model(cfg: Config, k: int, packed: bool, device: torch.device) -> Sequence1Modal:
    """Fold k's untrained model: weights drawn from ``fold_seed(seed, k)`` (under a lock: the global RNG)."""
    with _GLOBAL_RNG:
        torch.manual_seed(fold_seed(cfg.seed, k))
        model = Sequence1Modal(cfg.model_config(), packed=packed)
    return model.to(device)



class FoldRun:
    """One fold's training state, advanced one epoch at a time (see the module docstring).

    :func:`train_fold` runs one to the end; :mod:`aus_lib.schedule` interleaves several, or
    computes their epochs together and hands each fold its results through :meth:`record`.
    With ``resume`` an existing ``fold_dir/state.pt`` is continued from its last finished epoch.
    """

    def __init__(self, cfg: Config, data: ClipData, k: int, split: FoldSplit, fold_dir: str | os.PathLike, *,
                 packed: bool, device: torch.device, resume: bool = True, epochs: int | None = None,
                 figures: bool = True) -> None:
        self.cfg, self.data, self.k, self.split = cfg, data, k, split
        self.figures = figures  # False: whoever schedules the fold draws them (fold_figures) once training is over
        self.epochs = cfg.epochs if epochs is None else epochs
        self.fold_dir = Path(fold_dir)
        self.device = device
        self.params = cfg.to_params()
        self.data_fingerprint = data_fingerprint(data)
        self.model = initial_model(cfg, k, packed, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stopper = EarlyStopping(cfg.patience, cfg.min_change, cfg.base)
        self.normalization = fit_normalization(data, split.train, cfg.preprocessor)
        self.tensors = fold_tensors(data, self.normalization, device)
        self.weights = class_weights(data.labels[split.train]).to(device)
        self.history: list[dict] = []
        self.best_model: dict | None = None
        # An empty validation set marks a refit: fixed epochs on all training actors, last epoch kept.
        self.refit = len(split.val) == 0
        state_path = self.fold_dir / "state.pt"
        if resume and state_path.is_file():
            state = torch.load(state_path, map_location=device, weights_only=True)
            diffs = differences(state["params"], self.params)
            if diffs:
                raise TrainError(f"Cannot resume {state_path}: it was trained with different settings "
                                 f"({', '.join(diffs)}){resume_hint(state['params'], diffs)}. Use another run "
                                 "folder, or the same settings.")
            if state.get("fold") != k:
                raise TrainError(f"Cannot resume {state_path} as fold {k}: it is the state of fold {state.get('fold')}.")
            if state.get("data") != self.data_fingerprint:
                made = ("by an older aus_lib that did not record its data" if state.get("data") is None else
                        f"from other data (fingerprint {state['data']}, this data {self.data_fingerprint})")
                raise TrainError(f"Cannot resume {state_path}: it was made {made}: the clips' AU values, labels or "
                                 "actors differ. Use another run folder, or the data it was trained on.")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.stopper.load_state_dict(state["early_stopping"])
            self.history, self.best_model = state["history"], state["best_model"]

    @property
    def done(self) -> bool:
        return self.stopper.should_stop or len(self.history) >= self.epochs

    @property
    def next_epoch(self) -> int:
        return len(self.history) + 1

    def train_and_validate(self) -> tuple[float, float, dict]:
        """Train the next epoch and validate: (train loss, train accuracy, validation metrics)."""
        train_loss, train_accuracy = train_epoch(self.model, self.optimizer, self.tensors, self.split.train,
                                                 self.weights, self.cfg,
                                                 fold_seed(self.cfg.seed, self.k, self.next_epoch))
        if self.refit:
            val = {m: float("nan") for m in ("n", *METRICS)}
        else:
            val, _, _ = evaluate(self.model, self.tensors, self.split.val, self.weights)
        return train_loss, train_accuracy, val

    def record(self, train_loss: float, train_accuracy: float, val: Mapping, seconds: float) -> dict:
        """Early stopping, the best weights, the history row and ``state.pt`` for the epoch just trained
        (``self.model`` and ``self.optimizer`` hold its end state); returns the history row."""
        epoch = self.next_epoch
        loss = train_loss if self.refit or not np.isfinite(train_loss) else val["loss"]
        if not np.isfinite(loss):
            raise TrainError(f"Fold {self.k}, epoch {epoch}: the loss became {loss}: training diverged. Lower the "
                             f"learning rate 'lr' (now {self.cfg.lr}) in {self.cfg.source} and start a new run.")
        if self.refit:  # no validation: the last epoch is the model
            improved, self.stopper.best_epoch = True, epoch
        else:
            improved = self.stopper.step(epoch, val["f1"])
        if improved:
            self.best_model = _plain(self.model.state_dict())
        self.history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                             "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                             "val_precision": val["precision"], "val_recall": val["recall"], "val_f1": val["f1"],
                             "best": improved, "seconds": seconds})
        runs.atomic_torch_save(self.fold_dir / "state.pt", {
            "params": self.params, "fold": self.k, "data": self.data_fingerprint, "epoch": epoch,
            "model": _plain(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(), "early_stopping": self.stopper.state_dict(),
            "history": self.history, "best_model": self.best_model})
        return self.history[-1]

    def run_epoch(self) -> dict:
        """Train, validate and record the next epoch; its history row."""
        started = time.perf_counter()
        train_loss, train_accuracy, val = self.train_and_validate()
        return self.record(train_loss, train_accuracy, val, time.perf_counter() - started)

    def finish(self) -> FoldResult:
        """Load the best epoch's weights, evaluate the test fold and write the fold's files."""
        best_epoch = self.stopper.best_epoch
        best_model = self.best_model
        if best_model is None:
            best_epoch = self.history[-1]["epoch"]
            best_model = _plain(self.model.state_dict())
            warnings.warn(f"Fold {self.k}: no epoch's validation F1 beat base={self.cfg.base} (+ min_change="
                          f"{self.cfg.min_change}); the last epoch ({best_epoch}) is saved as the checkpoint.",
                          stacklevel=3)
        self.model.load_state_dict(best_model)
        return finish_fold(self.cfg, self.data, self.k, self.split, self.fold_dir, self.model, self.tensors,
                            self.weights, self.normalization,
                            pd.DataFrame(self.history, columns=list(HISTORY_COLUMNS)), best_epoch,
                            data_fingerprint=self.data_fingerprint, figures=self.figures)



def report_epoch(bar: tqdm | None, run: FoldRun, row: dict) -> None:
    """Advance the progress bar by one epoch of ``run``."""
    if bar is not None:
        bar.update(1)
        bar.set_postfix({"fold": run.k, "epoch": row["epoch"], "val_f1": f"{row['val_f1']:.3f}",
                         "best_epoch": run.stopper.best_epoch},
                        refresh=False)



def train_fold(cfg: Config, data: ClipData, k: int, split: FoldSplit, fold_dir: str | os.PathLike, *,
               packed: bool = True, device: torch.device | None = None, resume: bool = True,
               bar: tqdm | None = None, on_epoch_end: EpochHook | None = None,
               epochs: int | None = None) -> FoldResult:
    """Train fold ``k`` to the end, alone, and write its outputs to ``fold_dir`` (see :class:`FoldRun`).

    ``on_epoch_end`` is called after each epoch's state is saved (tests use it to interrupt).
    """
    run = FoldRun(cfg, data, k, split, fold_dir, packed=packed, device=device or resolve_device(cfg.device),
                  resume=resume, epochs=epochs)
    if bar is not None:
        bar.update(len(run.history))
    while not run.done:
        row = run.run_epoch()
        report_epoch(bar, run, row)
        if on_epoch_end is not None:
            on_epoch_end(k, row["epoch"], row)
    if bar is not None:
        bar.update(run.epochs - len(run.history))  # epochs skipped by early stopping
    return run.finish()



def finish_fold(cfg: Config, data: ClipData, k: int, split: FoldSplit, fold_dir: Path, model: Sequence1Modal,
                 tensors: FoldTensors, weights: torch.Tensor, normalization: dict | None,
                 history: pd.DataFrame, best_epoch: int, data_fingerprint: str | None = None,
                 figures: bool = True) -> FoldResult:
    """Evaluate the best checkpoint on the test fold and write the fold's files, DONE last; the figures
    too unless ``figures`` is False (then :func:`fold_figures` draws them from the files later)."""
    test, y_true, y_pred = evaluate(model, tensors, split.test, weights)
    best_row = history.loc[history["epoch"] == best_epoch].iloc[0]
    partition = "test (= validation)" if cfg.selection == "test_fold" else "test"
    refit = len(split.val) == 0
    inner = {}
    if refit:  # the epoch count came from the inner run beside it
        chosen = json.loads((fold_dir / "inner" / "metrics.json").read_text())
        inner = {"inner_best_epoch": chosen["best_epoch"], "inner_val_f1": chosen["val_f1"],
                 "inner_val_actors": chosen["val_actors"], "inner_test_accuracy": chosen["accuracy"]}
    metrics = {"fold": k, "selection": cfg.selection, "final_fit": "refit" if refit else "inner",
               "partition": partition, "best_epoch": int(best_epoch),
               "epochs_run": int(len(history)), **{m: test[m] for m in ("n", *METRICS)},
               "val_loss": float(best_row["val_loss"]), "val_accuracy": float(best_row["val_accuracy"]),
               "val_f1": float(best_row["val_f1"]), "train_actors": actors_of(data, split.train),
               "val_actors": actors_of(data, split.val), "test_actors": actors_of(data, split.test),
               **inner, "note": cfg.selection_note}
    runs.atomic_torch_save(fold_dir / "checkpoint.pt", {
        "model": _plain(model.state_dict()), "params": cfg.to_params(), "labels": list(LABELS), "fold": k,
        "epoch": int(best_epoch), "metrics": metrics, "normalization": normalization,
        "test_actors": metrics["test_actors"], "data": data_fingerprint})
    runs.atomic_write_csv(fold_dir / "history.csv", history, index=False)
    cm = analysis.confusion(y_true, y_pred).reindex(index=list(LABELS), columns=list(LABELS))
    runs.atomic_write_csv(fold_dir / "confusion.csv", cm)
    runs.atomic_write_json(fold_dir / "metrics.json", metrics)
    if figures:
        fold_figures(fold_dir, cfg.name)
    runs.mark_done(fold_dir, {"best_epoch": int(best_epoch), "f1": test["f1"]})
    return FoldResult(k, history, metrics)


def fold_figures(fold_dir: str | os.PathLike, name: str) -> None:
    """A fold's learning curve and confusion matrix, drawn from its history.csv, confusion.csv and metrics.json
    (the confusion matrix last: when it exists, both do)."""
    from aus_lib import plots  # deferred: training needs no matplotlib (~30 MB), and figures come after it

    fold_dir = Path(fold_dir)
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    k, best_epoch = metrics["fold"], metrics["best_epoch"]
    history = pd.read_csv(fold_dir / "history.csv")
    plots.learning_curve(history, f"Fold {k}: learning curve ({name})", fold_dir / "learning_curve.png")
    cm = pd.read_csv(fold_dir / "confusion.csv", index_col=0)
    plots.confusion_matrix(cm, f"Fold {k}: {metrics['partition']} at best epoch {best_epoch} ({name})",
                           path=fold_dir / "confusion.png")

