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


def executed_notebooks_dirs(run_dir: Path) -> list[Path]:
    """Where a run's executed notebooks may be: ``<outputs>/notebooks/<run>/`` (``make run``), or
    ``<run>/notebooks/``."""
    return [run_dir.parent.parent / "notebooks" / run_dir.name, run_dir / "notebooks"]


# JupyterLab's page without its scripts: they would be fetched from a CDN and only serve math,
# diagrams and live widgets, none of which a batch-run notebook of this project holds. Without
# them a page opens complete offline: text, tables, CSS and PNG figures are all inside it.
_STATIC_PAGE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _is_executed(nb) -> bool:
    return any(cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
               for cell in nb.cells)


def _write_utf8(path: Path, text: str) -> Path:
    from aus_lib.runs import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def export_html(run_dir: str | os.PathLike, notebooks_dir: str | os.PathLike | None = None,
                out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Export the executed notebooks of a run to HTML pages that need nothing else to open: every
    figure is a PNG embedded in the page. Pages go to ``out_dir`` (default ``<run>/report/``), one
    per notebook plus ``index.html``; pages of an earlier export are replaced, as they are made
    from the same notebooks. Returns the pages written, index last."""
    import html

    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run folder {run_dir} does not exist.")
    places = [Path(notebooks_dir)] if notebooks_dir is not None else executed_notebooks_dirs(run_dir)
    executed = {}
    for place in places:
        for path in sorted(place.glob("*.ipynb")) if place.is_dir() else []:
            nb = nbformat.read(str(path), as_version=4)
            if _is_executed(nb):
                executed.setdefault(path.stem, (path, nb))
    if not executed:
        raise FileNotFoundError(
            f"No executed notebooks of {run_dir.name} in {' or '.join(map(str, places))}. Make them with `make run` "
            f"(RUN=<name> names the run), or execute each notebook into {places[0]}/, e.g. `papermill -k {KERNEL_NAME} "
            f"notebooks/04_analysis.ipynb {places[0]}/04_analysis.ipynb -p run_dir {run_dir}`.")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True, template_file="static_page.html.j2",
                            extra_loaders=[jinja2.DictLoader({"static_page.html.j2": _STATIC_PAGE})])
    written = []
    for stem, (path, nb) in executed.items():
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"{run_dir.name} - {stem}"}})
        written.append(_write_utf8(out / f"{stem}.html", body))
    items = "\n".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a> (from '
                       f"{html.escape(str(executed[p.stem][0]))})</li>" for p in written)
    index = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Run {html.escape(run_dir.name)}</title>"
             f"</head>\n<body><h1>Run {html.escape(run_dir.name)}</h1>\n<ul>\n{items}\n</ul></body></html>\n")
    written.append(_write_utf8(out / "index.html", index))
    return written


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
