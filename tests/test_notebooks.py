"""The notebooks, executed with papermill on small data exactly as a batch user runs them."""
import json

import pytest

from aus_lib.notebooks import NOTEBOOKS, run_notebook
from aus_lib.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.slow


def outputs_of(nb_path):
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def test_01_make_folds_runs_on_a_small_set(tiny_synthetic, tmp_path):
    out = tmp_path / "folds"
    run_notebook("01_make_folds", tmp_path / "01.ipynb",
                 {"aus_dir": str(tiny_synthetic), "kfolds": 2, "out_dir": str(out)})
    assert (out / "manifest_2CV.csv").is_file()
    assert (out / "complete_dataset_2CV.txt").is_file()
    assert (out / "training-fold_2_outof_2.txt").is_file()
    assert (out / "clips_per_fold_emotion.png").stat().st_size > 0
    assert "240 clips from 4 actors" in outputs_of(tmp_path / "01.ipynb")


def test_01_runs_from_the_repository_root_too(tiny_synthetic, tmp_path):
    run_notebook("01_make_folds", tmp_path / "01.ipynb",
                 {"aus_dir": str(tiny_synthetic), "kfolds": 4, "out_dir": str(tmp_path / "f")}, cwd=REPO_ROOT)
    assert (tmp_path / "f" / "manifest_4CV.csv").is_file()
