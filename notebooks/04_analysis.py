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
# # 04 · Analyse a run: metrics, confusions, static baselines, attention over AU frames
#
# **What it does.** Summarises the posteriors of a cross-validated run per fold and on average (accuracy with its
# 95 % confidence interval as in the paper, weighted precision/recall/F1, unweighted average recall), draws raw and
# row-normalized confusion matrices, per-emotion recall, compares with static classifiers on per-clip averaged AUs run
# on the same folds and with the paper's Table 2, and shows where the model's attention falls over the AU frames.
#
# **Reads.** `run_dir` (a 02 run with posteriors from 03) or `posteriors_dir` (any folder of posterior files in the
# original format, e.g. from the original pipeline: metrics and confusions only).
#
# **Writes** `<run>/analysis/` (tables and run-level figures), per fold next to the checkpoint
# `fold_<k>/confusion_*.png` and `fold_<k>/attention_*.png`, and the scored clips in `<run>/predictions/predict-<time>/`.
#
# **Batch:** `papermill notebooks/04_analysis.ipynb out.ipynb -p run_dir outputs/runs/<run>`

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
run_dir: "Optional[str]" = None          # a run folder; None: the newest run in outputs/runs that has posteriors
posteriors_dir: "Optional[str]" = None   # a folder of posterior files; None: <run>/posteriors
partition: str = "val"                   # which posterior files to analyse
baselines: bool = True                   # run the static baselines on the same folds
minirocket: bool = True                  # MiniRocket among them (its first run in a fresh environment compiles ~20 s)
examples_per_emotion: int = 1            # correct and misclassified clips per emotion in the attention grids
clips_to_score: list = []                # your AU CSV files (OpenFace or py-feat) to score; []: the run's first clip

# %%
from IPython.display import Image, display

from aus_lib import analysis, dataset, inference, plots, report
from aus_lib.paths import OUTPUTS, REPO_ROOT, resolve
from aus_lib.progress import in_batch_kernel
from aus_lib.runs import atomic_write_csv

plots.apply_style()
run = resolve(run_dir, REPO_ROOT) if run_dir else (None if posteriors_dir else
                                                   report.newest_run_with_posteriors(OUTPUTS / "runs", partition))
post = report.load_posteriors(run, resolve(posteriors_dir, REPO_ROOT) if posteriors_dir else None, partition)
out = report.analysis_dir(post)
print(f"Posteriors: {post.folder} ({len(post.tables)} folds, {len(post.long)} clips)\nAnalysis goes to: {out}")
if post.params:
    print(f"Run {post.run_dir.name}: selection={post.selection!r}")

# %% [markdown]
# ## Metrics per fold and on average

# %%
summary = analysis.summarize_posteriors(post.folder, partition)
atomic_write_csv(out / f"summary_{partition}.csv", summary)
display(summary.round(4))
pooled = summary.attrs["pooled"]
print(f"Pooled accuracy over {pooled['n']} clips: {100 * pooled['accuracy']:.2f} ± {100 * pooled['ci95']:.2f} % "
      "(95 % CI, normal approximation)")
if post.selection == "test_fold":
    print("Note:", analysis.TEST_FOLD_NOTE)

# %% [markdown]
# ## Confusion matrices and per-emotion recall

# %%
written = report.confusion_figures(post)
display(Image(filename=str(written["all-raw"])))
display(Image(filename=str(written["all-normalized"])))
recall = report.per_emotion_recall(post)
atomic_write_csv(out / f"recall_per_emotion_{partition}.csv", recall)
display(recall.round(3))
plots.per_emotion_bar(recall, "Recall per emotion (mean ± sd over folds)", "Recall",
                      path=out / f"recall_per_emotion_{partition}.png")

# %% [markdown]
# ## Static baselines on the same folds, and the paper
# Static models see each clip's average AU vector, so any gain of the sequence model over them comes from timing.

# %%
data = None
if post.manifest is not None:
    data = dataset.load_clips(post.manifest)
if baselines and data is not None:
    static = report.static_baselines(post.manifest, data, minirocket=minirocket)
    comparison = analysis.comparison_table(summary, static, post.selection)
else:
    comparison = analysis.comparison_table(summary, {}, post.selection)
atomic_write_csv(out / "comparison.csv", comparison)
display(analysis.readable(comparison))
plots.metric_comparison(report.comparison_figure_table(comparison), "Accuracy (%) with 95 % CI: this run, "
                        "static baselines and the paper", path=out / "comparison.png")

# %% [markdown]
# ## Attention over AU frames
# For each fold: one clip's AUs with its attention curve, a grid of correct and misclassified clips per emotion, the
# mean attention profile over normalized time and the attention-weighted AU activity per emotion.

# %%
if data is not None:
    figures = report.attention_figures(post, data, per_emotion=examples_per_emotion)
    first = min(post.tables)
    for key in (f"{first}-clip", f"{first}-grid", "all-profiles", "all-importance"):
        display(Image(filename=str(figures[key])))
else:
    print("Attention figures need the run's AU data: pass run_dir of a 02_train_cv run.")

# %% [markdown]
# ## Score your own clips
# Any OpenFace (raw or processed) or py-feat CSV, not only clips of this run: the fold models' posteriors averaged per
# emotion, and their mean attention over the clip's AU frames (`aus-emotion predict RUN_DIR clip.csv ...` does the
# same in a terminal). Clips named like RAVDESS files (`...-AA.csv`) share their actor's normalization statistics.
# With no `clips_to_score`, the run's first clip is scored as an example: it was training data for some fold models,
# so its scores are optimistic; 03's posteriors are the honest figures for the run's own clips.

# %%
if post.manifest is not None:
    to_score = [resolve(p, REPO_ROOT) for p in clips_to_score] or [post.manifest["path"].iloc[0]]
    scores = inference.predict_clips(post.run_dir, to_score)
    scored_to = report.write_predictions(scores)
    display(scores.table.drop(columns="file").round(3))
    for clip in list(scores.table["clip"])[:4]:
        display(Image(filename=str(scored_to / f"attention_{clip}.png")))
    print(f"Table and {len(scores.table)} heatmap(s) written to {scored_to}")
else:
    print("Scoring clips needs a run's fold checkpoints: pass run_dir of a 02_train_cv run.")

# %% [markdown]
# ## Browse clips (JupyterLab)
# Pick a fold and a clip to see its AU heatmap, attention curve, true and predicted emotion. A batch run (papermill)
# has nobody to pick, so it leaves the first clip's figure instead.

# %%
if data is not None and in_batch_kernel():
    display(report.clip_figure(report.attention_items(post, data, fold=min(post.tables))[0]))
elif data is not None:
    display(report.clip_browser(post, data))

# %%
print(f"Analysis written to {out}" + (f" and next to each fold's checkpoint in {post.run_dir}" if post.run_dir else ""))
