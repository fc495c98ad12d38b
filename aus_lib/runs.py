"""Run folders and safe writing: nothing is half-written, nothing finished is overwritten.

Every file a run produces goes through :func:`atomic_path`: it is written to a temporary
file in the same folder and renamed into place, so a killed process never leaves a
truncated checkpoint, table or figure behind.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import errno
import fcntl
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from aus_lib.config import resume_hint

if TYPE_CHECKING:
    import pandas as pd

RUN_MARKER = "run.json"       # written when a run directory is created
DONE_MARKER = "DONE"          # written when a run has finished all its folds
LATEST = "latest"             # text file in the outputs folder naming the newest run


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunExistsError(FileExistsError):
    """A finished or foreign run is in the way."""


class OutputDirError(OSError):
    """The output folder cannot be written (permissions, full disk)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix, so libraries that look at it (matplotlib,
    torch) behave as for the final file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; give the final file the permissions open() would.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _explain(exc, path.parent) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike, df, **kwargs) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def atomic_torch_save(path: str | os.PathLike, obj) -> Path:
    import torch

    # Serialized in memory, then written by Python: torch's own file writer reports a full disk
    # as a bare RuntimeError, a plain write as the OSError (ENOSPC) that names the folder.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def _explain(exc: OSError, folder: Path) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "File size limit reached" if exc.errno == errno.EFBIG else "No space left"
        return OutputDirError(exc.errno, f"{why} on the device holding {folder}. Free some space, then run the "
                              "same command again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputDirError(exc.errno, f"Cannot write to {folder}: permission denied or read-only. Choose another "
                              "out_dir or fix the folder's permissions.")
    return exc


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and prove it can be written, with a message that names it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise _explain(exc, folder) from exc
    return folder


def default_run_name(prefix: str = "run") -> str:
    """A unique, sortable run name: prefix plus a timestamp to the microsecond."""
    return f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def prepare_run_dir(out_dir: str | os.PathLike, run_name: str, fingerprint: dict, *,
                    resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or reopen) ``out_dir/run_name`` for a run described by ``fingerprint``.

    * new folder: created, ``run.json`` holds the fingerprint;
    * existing folder, ``resume=True``: reopened if its fingerprint matches, else an error;
    * existing folder, ``overwrite=True``: the old contents are moved aside to
      ``run_name.replaced-<timestamp>`` (never deleted), then a fresh folder is made;
    * existing folder otherwise: an error naming it;
    * a folder another process is training into: an error, also with ``resume=True``.

    The folder stays locked for this process until :func:`release` (``train_cv`` releases it
    when it ends) or the process exits.
    """
    out_dir = check_writable(out_dir)
    run_dir = out_dir / run_name
    marker = run_dir / RUN_MARKER
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            if marker.is_file():
                old = json.loads(marker.read_text())
                diffs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                if diffs:
                    raise RunExistsError(
                        f"Cannot resume {run_dir}: it was started with a different configuration "
                        f"(differs in {', '.join(diffs)}{resume_hint(old, diffs)}). Use another run_name, or the "
                        "same settings."
                    )
            _lock(run_dir)
            remove_stale_temporaries(run_dir)
            return run_dir
        if overwrite:
            if marker.is_file():
                _lock(run_dir)  # never move a folder aside while another process trains into it
                release(run_dir)
            aside = run_dir.with_name(f"{run_name}.replaced-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
            os.replace(run_dir, aside)
        else:
            state = "a finished run" if (run_dir / DONE_MARKER).exists() else "an unfinished run"
            raise RunExistsError(
                f"{run_dir} already holds {state}. Pass resume=True to continue it, overwrite=True to start again "
                "(the old folder is kept beside it as *.replaced-<time>), or choose another run_name."
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, fingerprint)
    _lock(run_dir)
    return run_dir


# Run folders this process trains into, each with its open, locked run.json. The lock is an
# flock: the system drops it when the process ends, however it ends (SIGKILL included).
_LOCKS: dict[Path, io.BufferedReader] = {}


def _lock(run_dir: Path) -> None:
    """Refuse a run folder another process is training into (also with resume)."""
    key = run_dir.resolve()
    if key in _LOCKS:
        return
    handle = open(run_dir / RUN_MARKER, "rb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunExistsError(f"Another process is training into {run_dir} right now. Wait for it to finish (or stop "
                             "it), then resume; or choose another run_name.") from None
    _LOCKS[key] = handle


@atexit.register
def _release_all() -> None:
    for run_dir in list(_LOCKS):
        release(run_dir)


def release(run_dir: str | os.PathLike) -> None:
    """Let other processes train into ``run_dir`` again (after this process's training ends)."""
    handle = _LOCKS.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed process left behind (never a final file)."""
    stale = [p for p in Path(run_dir).rglob(".*.tmp*") if p.is_file() and ".tmp" in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def mark_done(run_dir: str | os.PathLike, summary: dict | None = None) -> None:
    atomic_write_json(Path(run_dir) / DONE_MARKER, summary or {})


def is_done(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / DONE_MARKER).is_file()


def set_latest(out_dir: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Record ``run_dir`` as the newest run of ``out_dir`` (``out_dir/latest``)."""
    atomic_write_text(Path(out_dir) / LATEST, Path(run_dir).name + "\n")


def latest_run(out_dir: str | os.PathLike) -> Path:
    pointer = Path(out_dir) / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"No {pointer}: no run has been recorded in {out_dir} yet. Run notebook 02_train_cv first.")
    run_dir = Path(out_dir) / pointer.read_text().strip()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{pointer} names {run_dir}, which does not exist.")
    return run_dir


@dataclass(frozen=True)
class Run:
    """The files of one training run's folder (``outputs/runs/<name>/``), each named here once."""

    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    @classmethod
    def find(cls, path: str | os.PathLike) -> Run:
        """The run at ``path``, or the newest one of a folder of runs (its ``latest`` pointer)."""
        run = cls(path)
        return run if run.config_file.is_file() else cls(latest_run(path))

    @property
    def config_file(self) -> Path:
        return self.dir / "config.json"

    @property
    def inputs_file(self) -> Path:
        """The clip manifest with its folds, as trained."""
        return self.dir / "inputs.csv"

    @property
    def posteriors(self) -> Path:
        return self.dir / "posteriors"

    @property
    def analysis(self) -> Path:
        return self.dir / "analysis"

    def fold_dir(self, k: int) -> Path:
        return self.dir / f"fold_{k}"

    def checkpoint(self, k: int) -> Path:
        return self.fold_dir(k) / "checkpoint.pt"

    def read(self) -> tuple[dict, pd.DataFrame]:
        """The params and the clip manifest (with folds) the run was trained on."""
        import pandas  # deferred: writing run files needs no pandas

        for path in (self.config_file, self.inputs_file):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {self.dir} is not a finished 02_train_cv run.")
        return json.loads(self.config_file.read_text()), pandas.read_csv(self.inputs_file)
