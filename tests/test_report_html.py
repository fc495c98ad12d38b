"""A run's executed notebooks as self-contained HTML pages (`aus-emotion report`, `make report`)."""
import base64
import re

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from aus_lib import cli, notebooks, plots


def _executed_notebook(path, text: str) -> bytes:
    """A notebook as papermill leaves it: a printed line and a figure (PNG) among its outputs."""
    png = plots.per_emotion_bar(pd.Series({"happy": 0.6, "sad": 0.4}), "Recall", "Recall")._repr_png_()
    cell = new_code_cell("print('...')", execution_count=1, outputs=[
        new_output("stream", name="stdout", text=text + "\n"),
        new_output("display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}),
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 04 · Analyse a run"), cell]), str(path))
    return png


def test_executed_notebooks_become_pages_with_their_figures_embedded(tmp_path):
    run = tmp_path / "outputs" / "runs" / "r1"
    run.mkdir(parents=True)
    png = _executed_notebook(tmp_path / "outputs" / "notebooks" / "r1" / "04_analysis.ipynb", "Pooled accuracy 55.7")
    _executed_notebook(tmp_path / "outputs" / "notebooks" / "r1" / "02_train_cv.ipynb", "FINAL CROSS VALIDATION")
    pages = notebooks.export_html(run)
    assert [p.name for p in pages] == ["02_train_cv.html", "04_analysis.html", "index.html"]
    assert all(p.parent == run / "report" for p in pages)
    page = (run / "report" / "04_analysis.html").read_text(encoding="utf-8")
    assert "Pooled accuracy 55.7" in page and "Analyse a run" in page
    assert base64.b64encode(png).decode() in page  # the figure itself, not a link to it
    assert not re.search(r"<img[^>]+src=\"(?!data:)", page)
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)  # nothing fetched: it opens offline
    index = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert 'href="02_train_cv.html"' in index and 'href="04_analysis.html"' in index


def test_a_run_without_executed_notebooks_says_how_to_make_them(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"No executed notebooks of r1.*make run.*papermill"):
        notebooks.export_html(run)
    # The tracked notebooks, copied without outputs, are not a report either.
    blank = tmp_path / "notebooks" / "r1" / "04_analysis.ipynb"
    blank.parent.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), str(blank))
    with pytest.raises(FileNotFoundError, match="No executed notebooks"):
        notebooks.export_html(run)
    assert not (run / "report").exists()


def test_cli_report_exports_the_newest_run_by_default(tmp_path, monkeypatch, capsys):
    from aus_lib import runs

    monkeypatch.setattr(cli, "OUTPUTS", tmp_path)
    run = tmp_path / "runs" / "r2"
    run.mkdir(parents=True)
    runs.set_latest(tmp_path / "runs", run)
    _executed_notebook(run / "notebooks" / "03_extract_posteriors.ipynb", "Posteriors written")
    assert cli.main(["report"]) == 0
    assert "1 notebook(s)" in capsys.readouterr().out
    assert (run / "report" / "03_extract_posteriors.html").is_file()
    assert cli.main(["report", str(tmp_path / "runs" / "gone")]) == 2
    assert "gone does not exist" in capsys.readouterr().err
