"""Running the notebook collection in batch (papermill), with the project's kernel.

The notebooks are the pipeline's stages; this module only executes them, so the
Makefile, the command line and the tests run them exactly as a user would.
"""
from __future__ import annotations

import os
from pathlib import Path

from aus_lib.paths import NOTEBOOKS_DIR

KERNEL_NAME = "aus-lib"
NOTEBOOKS = ("01_make_folds", "02_train_cv", "03_extract_posteriors", "04_analysis", "05_sweep")


class KernelMissingError(RuntimeError):
    pass


def check_kernel(name: str = KERNEL_NAME) -> None:
    """Fail early, with the fixing command, when the project's Jupyter kernel is not registered."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise KernelMissingError(
            f"The Jupyter kernel {name!r} is not registered, so a batch run could silently use another Python. "
            f"Run `make venv` (it registers it inside .venv), or `python -m ipykernel install --sys-prefix --name {name}` "
            "with the project's environment active."
        ) from None


def run_notebook(name: str, output: str | os.PathLike, parameters: dict | None = None,
                 kernel_name: str = KERNEL_NAME, cwd: str | os.PathLike | None = None, log_output: bool = False):
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``output``; a failing cell raises
    papermill's ``PapermillExecutionError`` carrying the real exception."""
    import papermill as pm

    if name not in NOTEBOOKS:
        raise ValueError(f"Unknown notebook {name!r}; the collection has {', '.join(NOTEBOOKS)}.")
    from aus_lib.progress import ENV

    check_kernel(kernel_name)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this process's environment; run in-process, papermill is not its parent
    # process, so say outright that nobody watches a live bar.
    before = os.environ.get(ENV)
    os.environ[ENV] = "plain"
    try:
        return pm.execute_notebook(
            str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(output), parameters=parameters or {},
            kernel_name=kernel_name, cwd=str(cwd or NOTEBOOKS_DIR), progress_bar=False, log_output=log_output,
        )
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def strip_outputs(path: str | os.PathLike) -> bool:
    """Remove outputs and execution counts from a notebook in place; True when it changed."""
    import nbformat

    from aus_lib.runs import atomic_path

    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            cell.outputs, cell.execution_count = [], None
            changed = True
    if changed:
        with atomic_path(path) as tmp:
            nbformat.write(nb, str(tmp))
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m aus_lib.notebooks strip FILE...`` (used by the pre-commit hook)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "strip":
        print("usage: python -m aus_lib.notebooks strip NOTEBOOK.ipynb ...", file=sys.stderr)
        return 2
    for path in args[1:]:
        if strip_outputs(path):
            print(f"stripped outputs from {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
