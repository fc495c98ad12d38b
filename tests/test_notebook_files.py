"""The committed notebooks: paired with their py:percent scripts, free of outputs, using the project's kernel.

What is checked is what git holds (``HEAD``), not the working copy: a user who runs a notebook in
JupyterLab has outputs in it until nbstripout cleans them at ``git add``, and that is fine.
Outside a git checkout (an unpacked release) the files themselves are checked.
"""
import json
import subprocess

import jupytext
import pytest

from aus_lib.notebooks import KERNEL_NAME, NOTEBOOKS
from aus_lib.paths import NOTEBOOKS_DIR, REPO_ROOT


def committed(name: str) -> str:
    """The text of notebooks/<name> as committed, or of the file when it is not in git."""
    path = NOTEBOOKS_DIR / name
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"HEAD:notebooks/{name}"], check=True,
                              capture_output=True, text=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        return path.read_text()


def code_and_markdown(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_script_are_in_sync(name):
    ipynb = jupytext.reads(committed(f"{name}.ipynb"), fmt="ipynb")
    script = jupytext.reads(committed(f"{name}.py"), fmt="py:percent")
    assert code_and_markdown(ipynb) == code_and_markdown(script), (
        f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/{name}.py` (or the pre-commit hook)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = json.loads(committed(f"{name}.ipynb"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{name}.ipynb carries outputs in cells {dirty}: strip them (executed copies belong in outputs/)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_the_project_kernel_and_has_a_parameters_cell(name):
    nb = json.loads(committed(f"{name}.ipynb"))
    assert nb["metadata"]["kernelspec"]["name"] == KERNEL_NAME
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert nb["cells"][0]["cell_type"] == "markdown" and "**Batch:**" in "".join(nb["cells"][0]["source"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_is_listed_by_papermill_help(name):
    from papermill.inspection import inspect_notebook

    nb = jupytext.read(NOTEBOOKS_DIR / f"{name}.ipynb")
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [line.split(":")[0].split("=")[0].strip() for line in source.splitlines()
                if line.strip() and not line.startswith("#")]
    inferred = inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
    assert list(inferred) == assigned, f"papermill could not read some parameters of {name}: fix their annotation/comment"
    assert all(p["help"] for p in inferred.values()), f"every parameter of {name} needs a comment for --help-notebook"


def test_strip_outputs_cleans_an_executed_copy(tmp_path):
    import shutil

    from aus_lib.notebooks import strip_outputs

    nb_path = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOKS_DIR / "03_extract_posteriors.ipynb", nb_path)
    nb = json.loads(nb_path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    code["execution_count"] = 3
    nb_path.write_text(json.dumps(nb))
    assert strip_outputs(nb_path) is True
    clean = json.loads(nb_path.read_text())
    assert all(not c.get("outputs") and not c.get("execution_count") for c in clean["cells"] if c["cell_type"] == "code")
    assert strip_outputs(nb_path) is False


def test_the_project_set_up_installs_nbstripout_as_a_git_filter():
    assert "nbstripout --install" in (REPO_ROOT / "Makefile").read_text()
    assert any(dep.startswith("nbstripout") for dep in __import__("tomllib").loads(
        (REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
