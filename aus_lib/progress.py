"""Training progress that is readable where it is watched: a live bar in a terminal or in
JupyterLab, plain periodic lines in a batch kernel (papermill, nbconvert).

In a batch kernel tqdm draws a widget that nobody renders: papermill's terminal and
``--log-output`` only ever see ``0/N`` and the executed notebook keeps a bar frozen at 0 %.
Plain printed lines stream to ``--log-output`` and stay in the executed notebook.
"""
from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

from tqdm.auto import tqdm
from tqdm.std import tqdm as text_tqdm

# Parent processes that run a notebook without anyone watching it.
BATCH_RUNNERS = ("papermill", "nbconvert", "nbclient")
# AUS_PROGRESS=plain|bar overrides the detection (e.g. for another batch runner).
ENV = "AUS_PROGRESS"


def in_batch_kernel() -> bool:
    """True inside a Jupyter kernel started by a batch runner (its parent process is papermill or
    nbconvert), False in JupyterLab, a terminal or a script."""
    if os.environ.get(ENV) in ("plain", "bar"):
        return os.environ[ENV] == "plain"
    if "ipykernel" not in sys.modules:
        return False
    try:
        import psutil

        command = " ".join(psutil.Process(os.getppid()).cmdline())
    except Exception:  # no psutil, or the parent is gone or not ours to inspect: assume someone watches
        return False
    return any(name in command for name in BATCH_RUNNERS)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class PlainProgress:
    """The part of tqdm's interface training uses (update, set_postfix, write, close), printed as
    one line at most every ``interval`` seconds, flushed at once:

    ``02 5-fold CV: 120/1500 epochs (8 %) | fold 3 epoch 24 val F1 0.412 best epoch 19 | elapsed 0:03:12 ETA 0:36:48``
    """

    def __init__(self, total: int, desc: str = "", interval: float = 30.0, file=None) -> None:
        self.total, self.desc, self.interval = total, desc, interval
        self.file = file or sys.stdout
        self.n = 0
        self.postfix: dict = {}
        self.start = time.monotonic()
        self._restored = 0  # epochs read back from disk before training began: they cost no time
        self._last_line = -float("inf")

    def update(self, n: int = 1) -> None:
        if n > 1 and self.n == self._restored:
            self._restored += n
        self.n += n

    def set_postfix(self, values: dict, refresh: bool = False) -> None:
        """Called after each trained epoch with its fold, epoch, val F1 and best epoch."""
        self.postfix = dict(values)
        if time.monotonic() - self._last_line >= self.interval:
            self.print_line()

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        trained = self.n - self._restored
        parts = [f"{self.desc}: {self.n}/{self.total} epochs ({100 * self.n / max(self.total, 1):.0f} %)"]
        if self.postfix:
            parts.append(" ".join(f"{key.replace('_', ' ').replace('val f1', 'val F1')} {value}"
                                  for key, value in self.postfix.items()))
        eta = f" ETA {_clock(elapsed / trained * (self.total - self.n))}" if trained > 0 else ""
        parts.append(f"elapsed {_clock(elapsed)}{eta}")
        return " | ".join(parts)

    def print_line(self) -> None:
        self._last_line = time.monotonic()
        self.write(self.line())

    def close(self) -> None:
        # Also reached when training was interrupted: then the line says where it stopped, not "done".
        verdict = "done" if self.n >= self.total else f"stopped at {self.n}/{self.total} epochs"
        self.write(f"{self.desc}: {verdict}, elapsed {_clock(time.monotonic() - self.start)}")


def progress_bar(iterable=None, **kwargs):
    """tqdm's live bar, or in a batch kernel its plain-text bar, which the executed notebook and
    papermill's log show as text (a widget there would stay at 0 %)."""
    if in_batch_kernel():
        return text_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


def training_bar(total: int, desc: str, enabled: bool = True, mininterval: float = 0.1):
    """A live tqdm bar, or :class:`PlainProgress` lines in a batch kernel."""
    if enabled and in_batch_kernel():
        return PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="epoch", disable=not enabled, mininterval=mininterval)
