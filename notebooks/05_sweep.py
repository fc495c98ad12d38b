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
# # 05 · Nested hyperparameter search (Optuna), from one laptop to many machines
#
# **What it does.** Searches the config keys of `space_file` (ranges, log scales, choices) around `base_params`.
# A trial never sees an outer test fold: for each outer fold it trains on that fold's training actors only, holds
# out inner validation actors among them, and scores the epoch early stopping keeps by its validation weighted F1;
# the trial's value is the mean over the outer folds, reported after every epoch so that the median pruner stops
# bad trials early. When the study holds `n_trials` finished trials, the best configuration is trained once with
# the normal cross-validation (`selection="inner"`) and evaluated on the outer test folds: the figure to report.
#
# **Reads.** `space_file`, `base_params` (original schema), the fold lists in `folds_dir` (built from `aus_dir`
# when missing). **Shares** the study through `storage`: `None` = a journal file under `outputs/sweeps/<study>/`
# (any number of workers on this machine), or `postgresql://user:password@host/db` (workers on many machines).
#
# **Writes** `outputs/sweeps/<study>/`: `trials.csv`, `optimization_history.png`, `param_importances.png`,
# `best_params.json` (original schema: 02_train_cv loads it as `params_file`), `final_evaluation.csv`/`.json` and the
# evaluation run `final-trial<N>/`. Running it again continues the study; `aus-emotion sweep` does the same.
#
# **Batch:** `papermill notebooks/05_sweep.ipynb out.ipynb -p study demo -p n_trials 20 -p epochs 10`

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
space_file: str = "params/sweep_space.json"   # config key -> {"low", "high", "log"/"step"} or {"choices": [...]}
study: str = "sweep"                          # study name; results in outputs/sweeps/<study>/
storage: "Optional[str]" = None               # None: journal file in the study folder; or postgresql://...
n_trials: int = 20                            # finished trials the study should hold, all workers together
kfolds: "Optional[int]" = None                # outer folds; None: from base_params
folds_dir: "Optional[str]" = None             # fold lists from 01_make_folds; None: the synthetic set's
aus_dir: "Optional[str]" = None               # AU folder when folds_dir is None; None: synthetic data
epochs: "Optional[int]" = None                # epochs per fold in every trial; None: from base_params
base_params: str = "params/RAVDESS_AUs.json"  # everything the space does not search
final: bool = True                            # evaluate the best configuration on the outer folds at the end

# %%
import pandas as pd
from IPython.display import Image, display

from aus_lib import sweep
from aus_lib.paths import REPO_ROOT, resolve

result = sweep.run_sweep(resolve(space_file, REPO_ROOT), study, n_trials, storage=storage,
                         base_params=resolve(base_params, REPO_ROOT), overrides={"kfolds": kfolds, "epochs": epochs},
                         folds_dir=resolve(folds_dir, REPO_ROOT), aus_dir=resolve(aus_dir, REPO_ROOT), final=final)

# %% [markdown]
# ## Trials
# `value`: the search objective (inner validation only). Pruned trials stopped at the epoch given by their last
# reported step.

# %%
columns = [c for c in result.trials.columns if c in ("number", "value", "state", "duration") or c.startswith("params_")]
display(result.trials[columns].sort_values("value", ascending=False, na_position="last").head(20))
for name in ("optimization_history", "param_importances"):
    if (result.folder / f"{name}.png").is_file():
        display(Image(filename=str(result.folder / f"{name}.png")))

# %% [markdown]
# ## The best configuration on the outer test folds
# The only figure of this search to report: the outer test folds were used here, once, and never by the search.

# %%
if result.final is not None:
    display(pd.read_csv(result.folder / "final_evaluation.csv", index_col="fold").round(4))
    print(f"accuracy {100 * result.final['accuracy_mean']:.2f} ± {100 * result.final['accuracy_std']:.2f} %, "
          f"weighted F1 {100 * result.final['f1_mean']:.2f} ± {100 * result.final['f1_std']:.2f} % "
          f"(mean ± std over {result.final['folds']} outer folds, trial {result.final['trial']})")
print(f"Results in {result.folder}; best_params.json loads in 02_train_cv as params_file.")
