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
# # 01 · Check the AU data and make subject-wise folds
#
# **What it does.** Reads a folder of per-clip OpenFace Action Unit files (one CSV per RAVDESS clip, named after the
# clip, e.g. `01-01-03-02-01-01-12.csv`), checks every file up front, and splits the clips into actor-disjoint folds
# for cross-validation (the paper's split when K = 5 and all 24 actors are present).
#
# **Reads.** `aus_dir`: a folder (any subfolder layout, e.g. `Actor_01/`) or a zip of per-clip AU files: processed `;`
# files, raw OpenFace CSVs, or py-feat output. The RAVDESS authors' `FacialTracking_Actors_01-24.zip` is read as it is.
# With `aus_dir = None` the built-in synthetic RAVDESS-like data set, generated on first use.
#
# **Writes** (to `out_dir`): `manifest_{K}CV.csv` (one row per clip: path, parsed name fields, label, fold, frames),
# the original sequenceLearning fold lists (`complete_dataset_{K}CV.txt`, `training-fold_k_outof_K.txt`,
# `validation-fold_k_outof_K.txt`), `qc.csv`, and the figures below as PNG.
#
# **Batch:** `papermill notebooks/01_make_folds.ipynb out.ipynb -p kfolds 5 -p aus_dir /path/to/aus`

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
aus_dir: "Optional[str]" = None              # folder or .zip of per-clip AU CSVs; None: the built-in synthetic data set
vocal: str = "speech"                        # RAVDESS vocal channel: "speech" (the paper), "song" or "both"
kfolds: int = 5                              # number of actor-disjoint folds
params_file: str = "params/RAVDESS_AUs.json" # model config (only seed and kfolds are used here)
out_dir: str = "outputs/folds/synthetic_5CV" # where the manifest and fold lists go
seed: int = 2020                             # seeds the split when the paper's split does not apply
fold_actors: "Optional[dict]" = None                      # explicit split, e.g. {1: [1, 2], 2: [3, 4]} (fold -> test actors)
recursive: bool = True                        # also look for CSVs in subfolders (e.g. Actor_01/ ...)
strict: bool = False                          # AU values out of range: warn (False) or refuse (True)
overwrite: bool = False                       # replace fold files of another split in out_dir
real_dir: "Optional[str]" = None                         # real processed AU folder to compare the synthetic set with

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from aus_lib import dataset, folds, openface, plots, synthetic
from aus_lib.config import describe, load_config
from aus_lib.paths import REPO_ROOT, resolve

cfg = load_config(resolve(params_file, REPO_ROOT), {"kfolds": kfolds, "seed": seed})
print(describe(cfg))
out = resolve(out_dir, REPO_ROOT)
out.mkdir(parents=True, exist_ok=True)
plots.apply_style()

# %% [markdown]
# ## Read and check every clip
# Every file must be readable, hold the 35 AU columns (17 intensities `AUxx_r`, 18 presences `AUxx_c`), be numeric and
# finite, have at least 2 frames and carry a RAVDESS name. All problems are listed together, each with its file.

# %%
data_dir = dataset.resolve_aus_dir(resolve(aus_dir, REPO_ROOT), seed=cfg.seed)
print(f"AU folder: {data_dir}" + ("  (built-in synthetic data set)" if aus_dir is None else ""))
manifest = dataset.build_manifest(data_dir, recursive=recursive, strict=strict, vocal=vocal)
qc = openface.qc_table(list(manifest["path"]))
print(f"Data: {dataset.describe_data(manifest)}")
print(f"{len(manifest)} clips from {manifest['actor'].nunique()} actors, "
      f"{manifest['frames'].sum()} frames (median {manifest['frames'].median():.0f} per clip)")
display(openface.qc_summary(qc))

# %% [markdown]
# ## Folds: which actors are tested where

# %%
table = folds.make_fold_files(manifest, out, cfg.kfolds, cfg.seed, explicit=fold_actors, overwrite=overwrite)
test_actors = folds.folds_from_manifest(table)
display(pd.DataFrame({"test actors": {k: ", ".join(map(str, a)) for k, a in test_actors.items()},
                      "clips": table.groupby("fold").size()}).rename_axis("fold"))
counts = dataset.clips_per_fold_emotion(table)
display(counts)
display(plots.fold_emotion_counts(counts.drop(index="total", columns="total"), "Clips per fold and emotion",
                                   path=out / "clips_per_fold_emotion.png"))

# %%
display(plots.frames_histogram(table["frames"], "Frames per clip", path=out / "frames_per_clip.png"))

# %% [markdown]
# ## Synthetic data against real RAVDESS statistics
# Only when the synthetic set is used and a folder of real processed clips is given in `real_dir`.

# %%
if aus_dir is None and real_dir is not None and resolve(real_dir, REPO_ROOT).is_dir():
    comparison = synthetic.compare_to_real(resolve(real_dir, REPO_ROOT), data_dir)
    display(comparison)
    display(synthetic.plot_real_vs_synthetic(resolve(real_dir, REPO_ROOT), data_dir, path=out / "real_vs_synthetic.png"))
else:
    print("Skipped: set real_dir to a folder of real processed AU clips to compare.")

# %%
from aus_lib.runs import atomic_write_csv

atomic_write_csv(out / "qc.csv", qc, index=False)
print(f"Wrote to {out}:")
for p in sorted(out.iterdir()):
    print("  ", p.name)
