"""One source of paths. Everything a run writes goes under :data:`OUTPUTS`."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# AUS_OUTPUTS lets tests and batch jobs redirect every artefact without touching notebooks.
OUTPUTS = Path(os.environ.get("AUS_OUTPUTS", REPO_ROOT / "outputs"))
# The built-in synthetic RAVDESS-like data set is generated here on first use.
SYNTHETIC_DIR = Path(os.environ.get("AUS_SYNTHETIC_DIR", REPO_ROOT / "data" / "synthetic"))
CACHE_DIR = Path(os.environ.get("AUS_CACHE_DIR", REPO_ROOT / "data" / "cache"))
# Real data shared beside the repository (tests read it from there; it is never copied in).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def resolve(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> Path | None:
    """A user-given path; a relative one is taken from the current working directory, as every
    command-line tool does, or from ``base`` when given (the notebooks pass :data:`REPO_ROOT`, so
    they behave the same whether papermill runs them from the root or from ``notebooks/``)."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else Path(base if base is not None else Path.cwd()) / p


def default_folds_dir() -> Path:
    """Where ``aus-emotion make-folds`` writes fold lists and ``aus-emotion train`` reads them
    when no folder is given: one folder for both, whatever the data and K (so a K that does not
    match the fold lists is found out, not trained on other data)."""
    return OUTPUTS / "folds" / "default"
