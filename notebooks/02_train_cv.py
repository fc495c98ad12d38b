# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (aus_lib)
#     language: python
#     name: aus-lib
# ---

# %% [markdown]
# # 02 · Train the BiLSTM + self-attention model with subject-wise K-fold cross-validation
#
# **What it does.** Trains the paper's model (2-layer bidirectional LSTM over the 35 AU columns, self-attention
# pooling over frames, linear classifier to 8 emotions) once per fold, keeps the checkpoint with the best validation
# weighted F1, stops early after `patience` epochs without improvement, and reports the cross-validation table
# (the original `run.py train RAVDESS_AUs.json --kfolds 5`).
#
# **Reads.** `params_file` (original JSON schema) merged with `config_overrides` and the explicit overrides below;
# the manifest and fold lists from 01_make_folds in `folds_dir` (built on the fly from `aus_dir` when missing).
#
# **Writes** `out_dir/<run_name>/`: `config.json`, `inputs.csv`, `environment.json`, `cv_results.csv`, and per fold
# `fold_<k>/` with `checkpoint.pt`, `history.csv`, `learning_curve.png`, `confusion.csv`/`.png`, `metrics.json`.
#
# **Batch:** `papermill notebooks/02_train_cv.ipynb out.ipynb -p kfolds 5 -p params_file params/demo.json`

# %%
# %load_ext autoreload
# %autoreload 2
try:
    import aus_lib
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError("This kernel's Python has no aus_lib: pick the kernel 'Python (aus_lib)' "
                              "(`make venv` registers it) or run papermill with `-k aus-lib`.") from exc

# %% tags=["parameters"]
# Relative paths are taken from the repository root (REPO_ROOT), wherever papermill or Jupyter runs the notebook.
kfolds: int = 5                               # number of folds (must match the fold lists in folds_dir)
params_file: str = "params/RAVDESS_AUs.json"  # model and training config, original schema
folds_dir: str = "outputs/folds/synthetic_5CV"  # written by 01_make_folds; built here when missing
aus_dir: "Optional[str]" = None               # AU folder used only when folds_dir has no manifest; None: synthetic
out_dir: str = "outputs/runs"                 # runs are written to out_dir/run_name
run_name: "Optional[str]" = None              # None: a new unique name from the current time
device: "Optional[str]" = None                # "cpu", "cuda", "cuda:1"; None: from the params file (auto)
epochs: "Optional[int]" = None                # None: from the params file
patience: "Optional[int]" = None              # None: from the params file; -1 disables early stopping
config_overrides: dict = {}                   # merged over the params file, e.g. {"selection": "inner"}
resume: bool = False                          # continue an interrupted run of the same run_name
overwrite: bool = False                       # start run_name again (the old folder is kept aside)

# %%
from IPython.display import Image, display

from aus_lib import dataset, folds, runs, train
from aus_lib.config import describe, load_config
from aus_lib.paths import REPO_ROOT, resolve

cfg = load_config(resolve(params_file, REPO_ROOT), {**config_overrides, "kfolds": kfolds, "epochs": epochs, "patience": patience,
                                "device": device})
print(describe(cfg))

# %% [markdown]
# ## Data and folds

# %%
manifest = folds.load_or_make(resolve(folds_dir, REPO_ROOT), cfg.kfolds, aus_dir=resolve(aus_dir, REPO_ROOT), seed=cfg.seed)
print(f"Data: {dataset.describe_data(manifest)}")
print(f"{len(manifest)} clips, {manifest['actor'].nunique()} actors, {cfg.kfolds} folds; "
      f"test actors: {folds.folds_from_manifest(manifest)}")

# %% [markdown]
# ## Train
# One progress bar covers all folds and epochs; it shows the current validation F1 and the best epoch. In a batch run
# (papermill) it becomes plain lines every 30 s (fold, epoch, val F1, best epoch, elapsed, ETA) that `--log-output` streams.

# %%
run_dir = runs.prepare_run_dir(resolve(out_dir, REPO_ROOT), run_name or runs.default_run_name("run"),
                               train.run_fingerprint(cfg, manifest), resume=resume, overwrite=overwrite)
print(f"Run directory: {run_dir}")
runs.atomic_write_json(run_dir / "notebook_parameters.json", {
    "kfolds": kfolds, "params_file": params_file, "folds_dir": folds_dir, "aus_dir": aus_dir, "out_dir": out_dir,
    "run_name": run_dir.name, "device": device, "epochs": epochs, "patience": patience,
    "config_overrides": config_overrides, "resume": resume, "overwrite": overwrite})
result = train.train_cv(cfg, manifest, run_dir)
runs.set_latest(resolve(out_dir, REPO_ROOT), run_dir)

# %% [markdown]
# ## Final cross-validation results
# Metrics of each fold's best checkpoint on its evaluation partition (weighted precision, recall and F1).

# %%
print(cfg.selection_note)
display(result.table.round(4))

# %% [markdown]
# ## Learning curves and confusion matrices per fold

# %%
for k in sorted(result.histories):
    fold_dir = runs.Run(run_dir).fold_dir(k)
    display(Image(filename=str(fold_dir / "learning_curve.png")))
    display(Image(filename=str(fold_dir / "confusion.png")))

# %%
print(f"Everything of this run is in {run_dir}")
print("Next: 03_extract_posteriors with -p run_dir", run_dir)
