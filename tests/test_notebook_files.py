"""The committed notebooks: paired with their py:percent scripts, free of outputs, using the project's kernel."""
import json

import jupytext
import pytest

from aus_lib.notebooks import KERNEL_NAME, NOTEBOOKS
from aus_lib.paths import NOTEBOOKS_DIR


def code_and_markdown(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_script_are_in_sync(name):
    ipynb = jupytext.read(NOTEBOOKS_DIR / f"{name}.ipynb")
    script = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    assert code_and_markdown(ipynb) == code_and_markdown(script), (
        f"{name}.ipynb and {name}.py differ: run `jupytext --sync notebooks/{name}.py` (or the pre-commit hook)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{name}.ipynb carries outputs in cells {dirty}: strip them (executed copies belong in outputs/)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_the_project_kernel_and_has_a_parameters_cell(name):
    nb = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())
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
