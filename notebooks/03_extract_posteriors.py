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
# # 03 · Extract posteriors and attention from a trained run
#
# **What it does.** Loads the best checkpoint of every fold of a 02_train_cv run and infers on a partition
# (`val` = each fold's held-out actors, `train` = the rest, `all` = every clip), as the original
# `run.py inference RAVDESS_AUs_posteriors.json --kfolds 5 --pretrained ...`.
#
# **Reads.** `params_file` (posteriors schema: `inference_data`, `OUT_PATH`, `TRAINED_PATH`); `run_dir` (a run folder,
# or a folder of runs whose `latest` pointer is followed); the run's `inputs.csv` and `fold_<k>/checkpoint.pt`.
#
# **Writes** (to `out_dir`, default `<run>/posteriors/`): per fold the original sequenceLearning files
# `{name}-{partition}--fold_{k}_outof_{K}.csv` (tab-separated `tag y y_hat posteriors attentions`) and its
# `-predictions.csv`, `-posteriors.csv`, `-featAttention.csv`; plus `posteriors_long_{partition}.csv`, a tidy table.
#
# **Batch:** `papermill notebooks/03_extract_posteriors.ipynb out.ipynb -p run_dir outputs/runs/<run>`

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
params_file: str = "params/RAVDESS_AUs_posteriors.json"  # posteriors config, original schema
run_dir: "Optional[str]" = None        # a run folder; None: TRAINED_PATH of the params file
inference_data: "Optional[str]" = None # "val", "train" or "all"; None: from the params file
out_dir: "Optional[str]" = None        # None: OUT_PATH of the params file, or <run>/posteriors when that is null
kfolds: "Optional[int]" = None         # checked against the run; None: the run's own
device: str = "cpu"                    # inference device

# %%
from pathlib import Path

from IPython.display import display

from aus_lib import inference, runs
from aus_lib.config import describe, load_config
from aus_lib.paths import REPO_ROOT, resolve

cfg = load_config(resolve(params_file, REPO_ROOT), {"inference_data": inference_data, "TRAINED_PATH": run_dir, "OUT_PATH": out_dir,
                                "kfolds": kfolds}, posteriors=True)
print(describe(cfg))
trained = resolve(cfg.TRAINED_PATH, REPO_ROOT)
run = runs.Run.find(trained).dir
target = resolve(cfg.OUT_PATH, REPO_ROOT) if cfg.OUT_PATH else runs.Run(run).posteriors
print(f"Run: {run}\nPosterior files go to: {target}")

# %%
long = inference.extract_posteriors(run, partition=cfg.inference_data, out_dir=target, kfolds=kfolds,
                                    device=device)
display(long.head())
accuracy = (long["label"] == long["prediction"]).mean()
print(f"{len(long)} clips, {long['fold'].nunique()} folds, accuracy on '{cfg.inference_data}': {accuracy:.2%}")

# %%
print(f"Wrote to {target}:")
for p in sorted(target.iterdir()):
    print("  ", p.name)
print("Next: 04_analysis with -p run_dir", run)
