"""How the folds of a cross-validation are scheduled (``cfg.engine``); each fold is :mod:`aus_lib.fold`.

Every fold computes exactly what :func:`aus_lib.fold.train_fold` computes when it trains that
fold alone: the same initial weights, batches, dropout masks (per-epoch generators, never the
global RNG) and optimizer steps. Only the execution differs (:func:`run_folds` chooses):

* ``"plain"``: one fold after the other, packed model, in :func:`run_folds` itself.
* ``"batched"`` (the default), CPU or CUDA (:func:`train_interleaved`): the masked model, a few
  worker threads, each running one epoch of one fold at a time with one intra-op thread. The
  LSTM's small matrix products scale badly over threads (and collapse when the cores are shared),
  while independent folds scale almost linearly; with one intra-op thread per fold the results do
  not depend on the number of workers.
* ``"stacked"``, CUDA only and opt-in (:func:`aus_lib.stacked.train_stacked`): one computation
  for all folds, equal to the per-fold computation up to float rounding; it stays opt-in until a
  GPU measurement shows it right and faster.

Every setting changed here (torch threads, determinism) is restored when the call returns.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from aus_lib.config import Config
from aus_lib.dataset import ClipData
from aus_lib.fold import (EpochHook, FoldJob, FoldResult, FoldRun, TrainError, fold_figures, micro_batch_size,
                          report_epoch, train_fold)
from aus_lib.stacked import STACKED_DEVICES, train_stacked

MMAP_THRESHOLD = 16 * 2**20  # bytes; measured: 8-24 MB give the same peak, at no clear cost in time
_M_MMAP_THRESHOLD = -3       # mallopt's parameter number (glibc malloc.h)
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def torch_settings(cfg: Config) -> Iterator[None]:
    """Apply cfg.deterministic and cfg.num_threads for the duration of a run, then restore them,
    and the environment: deterministic mode sets a cuBLAS variable, and torch sets some of its own
    (``TORCHINDUCTOR_CACHE_DIR`` when deterministic mode loads the inductor config)."""
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    old_benchmark = torch.backends.cudnn.benchmark
    old_environment = dict(os.environ)
    if cfg.deterministic:
        # cuBLAS refuses deterministic mode without a fixed workspace; harmless on the CPU.
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_deterministic)
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_benchmark
        for name in set(os.environ) - set(old_environment):
            del os.environ[name]
        os.environ.update(old_environment)

ENGINES = ("plain", "batched", "stacked")


def run_folds(cfg: Config, data: ClipData, jobs: Sequence[FoldJob], *, device: torch.device, resume: bool = True,
              bar: tqdm | None = None, on_epoch_end: EpochHook | None = None) -> list[FoldResult]:
    """Train every job's fold for ``cfg.engine``; results in the order of ``jobs``.

    ``"plain"``: one fold after another with :func:`aus_lib.fold.train_fold` (packed model).
    ``"batched"``: the folds side by side (:func:`train_interleaved`); ``"stacked"``: stacked into
    one CUDA computation (:func:`aus_lib.stacked.train_stacked`). Each fold's epochs are
    :meth:`aus_lib.fold.FoldRun.run_epoch`, with the same per-fold results under every engine.
    The side-by-side engines draw the fold figures (:func:`aus_lib.fold.fold_figures`) once all are trained.
    """
    if cfg.engine not in ENGINES:
        raise TrainError(f"engine={cfg.engine!r}: use one of {list(ENGINES)}.")
    if cfg.engine == "plain":  # one at a time, so only one fold's tensors are on the device
        return [train_fold(job.cfg or cfg, data, job.k, job.split, job.fold_dir, packed=True, device=device,
                           resume=resume, bar=bar, epochs=job.epochs, on_epoch_end=on_epoch_end) for job in jobs]
    if cfg.engine == "stacked":
        # Opt-in until a GPU measurement shows it right and faster than folds side by side.
        if device.type not in STACKED_DEVICES:
            raise TrainError(f"engine='stacked' stacks the folds into one CUDA computation, but the device is "
                             f"{device}. Use engine='batched' on the CPU.")
        if cfg.attention_input_stats or cfg.final_fit != "inner":
            raise TrainError("engine='stacked' supports neither model_params.attention.input_stats nor "
                             "final_fit='refit' or 'ensemble'; use engine='batched'.")
        if micro_batch_size(cfg, device) < cfg.batch_size:
            raise TrainError(f"engine='stacked' trains whole batches, but micro_batch={cfg.micro_batch} cuts them into "
                             "chunks; set micro_batch to \"auto\" or null.")
    if not jobs:
        return []
    # Figures once every fold is trained: drawing them beside training folds would add matplotlib's and
    # seaborn's memory (~70 MB) to theirs, and matplotlib is not meant for threads.
    fold_runs = [FoldRun(job.cfg or cfg, data, job.k, job.split, job.fold_dir, packed=False, device=device,
                         resume=resume, epochs=job.epochs, figures=False) for job in jobs]
    if bar is not None:
        bar.update(sum(len(run.history) for run in fold_runs))
    train = train_stacked if cfg.engine == "stacked" else train_interleaved
    results = train(fold_runs, bar=bar, on_epoch_end=on_epoch_end)
    if bar is not None:
        bar.update(sum(run.epochs - len(run.history) for run in fold_runs))  # epochs skipped by early stopping
    del fold_runs
    release_free_memory()
    for job in jobs:
        fold_figures(job.fold_dir, (job.cfg or cfg).name)
    return results


class _Cancelled(Exception):
    """Another worker failed or the run was interrupted: stop at the next epoch boundary."""


# --- CPU: folds interleaved over worker threads -----------------------------------------------

def cpu_workers(n_folds: int) -> int:
    """How many folds train at once: one per thread torch may use (``cfg.num_threads`` once
    :func:`torch_settings` applied it), at most one per fold."""
    return max(1, min(n_folds, torch.get_num_threads()))



def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Have glibc serve allocations of ``nbytes`` or more with their own mappings, returned on free.

    By default glibc raises that threshold each time such a buffer is freed, so later ones come
    from the (per-thread) heaps and fragment them, and folds trained side by side on the CPU peak
    higher (a 5-fold CV: 0.94-1.01 GB instead of 0.81-0.84 GB). Process-wide and lasting (glibc
    cannot go back to its adaptive threshold), so it is opt-in: the ``aus-emotion`` CLI and the
    benchmark call it, a user's Jupyter kernel is left alone. Skipped where the C library is not
    glibc or the user set ``MALLOC_MMAP_THRESHOLD_``. True when applied.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, nbytes))



def release_free_memory() -> bool:
    """Hand the C library's free memory back to the system (glibc's ``malloc_trim``): the training threads'
    heaps keep what their batches freed, which would otherwise add to what comes next. True when done."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True



def train_interleaved(runs: Sequence[FoldRun], *, workers: int | None = None, bar: tqdm | None = None,
                      on_epoch_end: EpochHook | None = None) -> list[FoldResult]:
    """Train ``runs`` to the end and finish them; results in the order of ``runs``.

    ``workers`` threads, each taking the next epoch of the fold that is furthest behind and not
    being trained, with one torch thread each. Epochs, not whole folds, are the unit of work, so
    5 folds keep 2 workers busy to the end; a fold is finished (test evaluation, files, figures)
    by the worker that trained its last epoch, while the others go on training. A failing epoch
    (or hook) stops the others at their next epoch boundary and is re-raised.
    """
    workers = workers or cpu_workers(len(runs))
    lock = threading.Condition()
    busy: set[int] = set()
    stop = threading.Event()
    results: dict[int, FoldResult] = {}

    def claim() -> int | None:
        """The fold to train next (marked busy), or None when every fold is done."""
        with lock:
            while True:
                if stop.is_set():
                    raise _Cancelled
                free = [i for i, run in enumerate(runs) if i not in results and i not in busy]
                if free:
                    i = min(free, key=lambda j: (len(runs[j].history), runs[j].k))
                    busy.add(i)
                    return i
                if not busy:
                    return None
                lock.wait()

    def release(i: int) -> None:
        with lock:
            busy.discard(i)
            lock.notify_all()

    def work() -> None:
        torch.set_num_threads(1)  # also sets this thread's OpenMP setting, which is per thread
        try:
            while (i := claim()) is not None:
                try:
                    if not runs[i].done:
                        row = runs[i].run_epoch()
                        # The chunks' freed buffers stay in this thread's heap otherwise, and the next epoch's
                        # grow on top: measured 600 MB instead of 636 MB peak over a 20-epoch CV, same time.
                        release_free_memory()
                        report_epoch(bar, runs[i], row)
                        if on_epoch_end is not None:
                            on_epoch_end(runs[i].k, row["epoch"], row)
                    if runs[i].done:
                        results[i] = runs[i].finish()
                finally:
                    release(i)
        except _Cancelled:
            pass
        except BaseException:
            stop.set()
            with lock:
                lock.notify_all()
            raise

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fold") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()  # e.g. KeyboardInterrupt: the others stop after their current epoch
                with lock:
                    lock.notify_all()
                raise
    finally:
        torch.set_num_threads(threads_before)
    return [results[i] for i in range(len(runs))]
