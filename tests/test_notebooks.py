"""The notebooks, executed with papermill on small data exactly as a batch user runs them."""
import json
import shutil
from pathlib import Path

import pytest

from aus_lib import notebooks
from aus_lib.notebooks import run_notebook
from aus_lib.paths import REPO_ROOT

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


def test_02_train_cv_runs_a_short_cv(tiny_synthetic, tiny_params, tmp_path):
    run_notebook("02_train_cv", tmp_path / "02.ipynb", {
        "kfolds": 2, "params_file": str(tiny_params), "folds_dir": str(tmp_path / "folds"),
        "aus_dir": str(tiny_synthetic), "out_dir": str(tmp_path / "runs"), "run_name": "nb", "epochs": 2})
    run = tmp_path / "runs" / "nb"
    for name in ("config.json", "inputs.csv", "environment.json", "cv_results.csv", "notebook_parameters.json"):
        assert (run / name).is_file(), name
    for k in (1, 2):
        for name in ("checkpoint.pt", "history.csv", "learning_curve.png", "confusion.png", "confusion.csv"):
            assert (run / f"fold_{k}" / name).is_file(), (k, name)
    assert (tmp_path / "runs" / "latest").read_text().strip() == "nb"
    text = outputs_of(tmp_path / "02.ipynb")
    assert "Config from" in text and "epochs               2" in text  # the resolved config, with the override
    assert "optimistic" in text
    # Plain progress lines, not a widget nobody renders in a batch kernel.
    assert "tiny 2-fold CV: " in text and "val F1" in text and "best epoch" in text and "ETA" in text
    assert "tiny 2-fold CV: done" in text
    assert "widget-view" not in (tmp_path / "02.ipynb").read_text()


def test_02_refuses_to_overwrite_a_finished_run(tiny_run, tiny_params, tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="already holds a finished run"):
        run_notebook("02_train_cv", tmp_path / "02.ipynb", {
            "kfolds": 2, "params_file": str(tiny_params), "folds_dir": str(tiny_run.parent.parent / "folds"),
            "out_dir": str(tiny_run.parent), "run_name": tiny_run.name})
    assert (tiny_run / "DONE").is_file()


def test_03_extract_posteriors_writes_the_original_files(tiny_run, tmp_path):
    out = tmp_path / "post"
    run_notebook("03_extract_posteriors", tmp_path / "03.ipynb",
                 {"run_dir": str(tiny_run), "inference_data": "val", "out_dir": str(out)})
    assert (out / "tiny-val--fold_2_outof_2.csv").is_file()
    assert (out / "tiny-val--fold_2_outof_2-featAttention.csv").is_file()
    assert (out / "posteriors_long_val.csv").is_file()


def test_03_follows_the_latest_pointer_of_a_runs_folder(tiny_run, tmp_path):
    run_notebook("03_extract_posteriors", tmp_path / "03.ipynb",
                 {"run_dir": str(tiny_run.parent), "inference_data": "train", "out_dir": str(tmp_path / "p")})
    assert (tmp_path / "p" / "tiny-train--fold_1_outof_2.csv").is_file()


def test_04_analysis_writes_tables_and_figures(tiny_run, tmp_path):
    # A copy: the shared run may already hold analysis files and predictions other tests wrote.
    fresh = shutil.ignore_patterns("analysis", "predictions", "attention_*")
    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=fresh))
    run_notebook("04_analysis", tmp_path / "04.ipynb", {"run_dir": str(tiny_run), "minirocket": False})
    analysis = tiny_run / "analysis"
    for name in ("summary_val.csv", "comparison.csv", "comparison.png", "confusion_val_raw_all_folds.png",
                 "confusion_val_normalized_all_folds.png", "attention_profiles.png", "attention_au_importance.png",
                 "recall_per_emotion_val.png"):
        assert (analysis / name).is_file(), name
    assert (tiny_run / "fold_1" / "attention_grid.png").is_file()
    assert list((tiny_run / "fold_2").glob("attention_clip_*.png"))
    text = outputs_of(tmp_path / "04.ipynb")
    assert "Pooled accuracy over 240 clips" in text and "optimistic" in text
    nb = json.loads((tmp_path / "04.ipynb").read_text())
    last_figure = nb["cells"][-2]["outputs"]  # the clip browser's cell, run in batch
    assert any("image/png" in o.get("data", {}) for o in last_figure)
    assert "VBox(" not in json.dumps(nb) and "ConvergenceWarning" not in json.dumps(nb)
    assert "NaN" not in text and "<NA>" not in text
    scored = list((tiny_run / "predictions").glob("predict-*/attention_*.png"))  # the example clip of the run
    assert scored and "heatmap(s) written to" in text
    page = notebooks.export_html(tiny_run, notebooks_dir=tmp_path, out_dir=tmp_path / "html")[0].read_text()
    assert page.count("data:image/png;base64,") >= 8 and "Pooled accuracy over 240 clips" in page


def test_04_reads_a_bare_folder_of_posterior_files(tiny_run, tmp_path):
    import shutil

    folder = tmp_path / "posteriors_only"
    shutil.copytree(tiny_run / "posteriors", folder)
    run_notebook("04_analysis", tmp_path / "04.ipynb", {"posteriors_dir": str(folder), "baselines": False})
    assert (folder / "analysis" / "summary_val.csv").is_file()
