"""What 04_analysis shows for a run: metrics, confusion matrices, baselines and attention figures.

Functions here tie the metrics of :mod:`aus_lib.analysis`, the figures of :mod:`aus_lib.plots`
and a run's files together, so the notebook stays a short story. Figures of one fold go next
to its checkpoint (``fold_<k>/``); run-level ones to ``<run>/analysis/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aus_lib import analysis, attention_plots, baselines, dataset, folds, plots, posteriors
from aus_lib.ravdess import EMOTIONS
from aus_lib.runs import Run, atomic_write_csv

# Static baselines of the paper's Table 2, plus two common references.
STATIC_BASELINES = {
    "MLP (80), averaged AUs, min-max": ("mlp", 80, "minmax"),
    "SVC (C=1), averaged AUs, min-max": ("svc", 1.0, "minmax"),
    "LogReg (C=1), averaged AUs, standard": ("logreg", 1.0, "standard"),
    "kNN (k=5), averaged AUs, min-max": ("knn", 5, "minmax"),
}


@dataclass
class RunPosteriors:
    """A run's (or a posterior folder's) predictions for one partition."""

    folder: Path                       # where the posterior files are
    partition: str
    tables: dict[int, pd.DataFrame]    # fold -> read_posteriors() table
    long: pd.DataFrame                 # clip, fold, partition, label, prediction, p_*
    run_dir: Path | None = None        # the training run, when known
    params: dict | None = None
    manifest: pd.DataFrame | None = None

    @property
    def selection(self) -> str:
        return (self.params or {}).get("selection", "test_fold")


def load_posteriors(run_dir: str | os.PathLike | None = None, posteriors_dir: str | os.PathLike | None = None,
                    partition: str = "val") -> RunPosteriors:
    """Posteriors of a run (``run_dir/posteriors`` by default) or of any folder of original files."""
    if run_dir is None and posteriors_dir is None:
        raise ValueError("Give run_dir (a 02_train_cv run) or posteriors_dir (a folder of posterior files).")
    run = Path(run_dir) if run_dir is not None else None
    folder = Path(posteriors_dir) if posteriors_dir is not None else Run(run).posteriors
    if posteriors_dir is None and not posteriors.find_posterior_files_or_none(folder, partition):
        raise FileNotFoundError(f"{run} has no '{partition}' posteriors yet: run 03_extract_posteriors with "
                                f"-p run_dir {run} first (or pass posteriors_dir).")
    tables = posteriors.read_run(folder, partition)
    long = posteriors.to_long_table(tables, partition=partition)
    params = manifest = None
    if run is not None and Run(run).config_file.is_file():
        params, manifest = Run(run).read()
    return RunPosteriors(folder, partition, tables, long, run, params, manifest)


def newest_run_with_posteriors(runs_dir: str | os.PathLike, partition: str = "val") -> Path:
    """The most recently written run in ``runs_dir`` that has ``partition`` posteriors: the
    ``latest`` pointer names the newest run of 02, which may not have been through 03 yet."""
    runs_dir = Path(runs_dir)
    candidates = sorted((Run(p) for p in runs_dir.iterdir() if Run(p).config_file.is_file()),
                        key=lambda run: run.config_file.stat().st_mtime, reverse=True) if runs_dir.is_dir() else []
    for run in candidates:
        if posteriors.find_posterior_files_or_none(run.posteriors, partition):
            return run.dir
    if candidates:
        raise FileNotFoundError(f"No run in {runs_dir} has '{partition}' posteriors yet: run 03_extract_posteriors "
                                f"with -p run_dir {candidates[0].dir} first.")
    raise FileNotFoundError(f"No run in {runs_dir} yet: run 02_train_cv, then 03_extract_posteriors.")


def clip_figure(item: dict):
    """One clip's AU heatmap with its attention curve, true and predicted emotion."""
    return attention_plots.attention_heatmap(item["aus"], item["attention"], f"Fold {item['fold']}, clip {item['clip']}: "
                                   f"true {item['true']}, predicted {item['pred']}")


def analysis_dir(post: RunPosteriors) -> Path:
    out = Run(post.run_dir or post.folder).analysis
    out.mkdir(parents=True, exist_ok=True)
    return out


def confusion_figures(post: RunPosteriors) -> dict[str, Path]:
    """Raw and row-normalized confusion matrices, per fold and summed over folds, as CSV and PNG."""

    out = analysis_dir(post)
    written = {}
    for normalize in (None, "true"):
        kind = "normalized" if normalize else "raw"
        for k, cm in analysis.confusion_by_fold(post.long, post.partition, normalize).items():
            folder = out if k == "all" or post.run_dir is None else Run(post.run_dir).fold_dir(k)
            stem = f"confusion_{post.partition}_{kind}" + ("_all_folds" if k == "all" else "")
            title = (f"{'All folds' if k == 'all' else f'Fold {k}'}: confusion matrix ({post.partition}"
                     f"{', row-normalized' if normalize else ''})")
            atomic_write_csv(folder / f"{stem}.csv", cm)
            written[f"{k}-{kind}"] = folder / f"{stem}.png"
            plots.confusion_matrix(cm, title, normalize=bool(normalize), path=folder / f"{stem}.png")
    return written


def per_emotion_recall(post: RunPosteriors) -> pd.DataFrame:
    """Fold × emotion recall (EMOTIONS order)."""
    return pd.DataFrame({k: analysis.per_emotion_recall(g["label"], g["prediction"])
                         for k, g in post.long.groupby("fold")}).T.rename_axis("fold")


def clip_averages(data: dataset.ClipData) -> pd.DataFrame:
    """Per-clip mean of each AU column (the static models' input), with the clip name."""
    sums = data.features.sum(axis=1, dtype=np.float64)
    table = pd.DataFrame(sums / data.lengths[:, None], columns=list(data.columns))
    table["name"] = data.names
    return table


ACTOR_NORM_LABELS = {None: "", "zscore": ", actor z-score", "robust": ", actor median/IQR"}


def static_baselines(manifest: pd.DataFrame, data: dataset.ClipData,
                     which: dict[str, tuple] = STATIC_BASELINES, actor_normalizations=(None, "zscore"),
                     minirocket: bool = True) -> dict[str, pd.DataFrame]:
    """Baselines cross-validated on the run's own folds: static classifiers on per-clip averaged
    AUs and MiniRocket on the sequences, once per actor normalization (label-free, per actor).
    ``data`` holds the raw clips; names say which normalization a row used.

    The MLP keeps scikit-learn's default 200 iterations, as the original code did, so some fits
    stop before converging: one line counts them instead of a warning per fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    table = clip_averages(data)
    fold_actors = folds.folds_from_manifest(manifest)
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for kind in actor_normalizations:
            label = ACTOR_NORM_LABELS[kind]
            for name, (model, param, norm) in which.items():
                out[name + label] = baselines.static_cv(table, model, param, norm, folds=fold_actors,
                                                        actor_normalization=kind)
            if minirocket:
                out["MiniRocket + ridge, AU sequences" + label] = baselines.minirocket_cv(data, fold_actors, kind)
    stopped = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    for w in caught:
        if w not in stopped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if stopped:
        print(f"{len(stopped)} static fit(s) stopped at their iteration limit before converging (the original "
              "code's settings, kept for comparability).")
    return out


def baselines_table(manifest: pd.DataFrame, data: dataset.ClipData, actor_normalizations=(None, "zscore"),
                    minirocket: bool = True) -> pd.DataFrame:
    """:func:`static_baselines` as one table in %: accuracy (mean over folds), its 95 % half-width
    over all clips, UAR and F1, one row per baseline."""
    rows = {}
    for name, summary in static_baselines(manifest, data, actor_normalizations=actor_normalizations,
                                          minirocket=minirocket).items():
        m = summary.loc["mean"]
        rows[name] = {"accuracy": 100 * m["accuracy"], "ci95": 100 * m["ci95"], "uar": 100 * m["uar"],
                      "f1": 100 * m["f1"], "n": int(m["n"])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("baseline")


def comparison_figure_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison table in the layout plots.metric_comparison draws."""
    table = comparison[["accuracy"]].copy()
    table["ci_low"] = comparison["accuracy"] - comparison["ci95"]
    table["ci_high"] = comparison["accuracy"] + comparison["ci95"]
    table["group"] = comparison["source"]
    return table


# --- attention -----------------------------------------------------------------------------

def attention_items(post: RunPosteriors, data: dataset.ClipData, fold: int | None = None) -> list[dict]:
    """One dict per clip with its AU frames, attention, true and predicted emotion."""
    index = {name: i for i, name in enumerate(data.names)}
    items = []
    for k, table in sorted(post.tables.items()):
        if fold is not None and k != fold:
            continue
        for row in table.itertuples(index=False):
            i = index.get(row.clip)
            if i is None:
                raise KeyError(f"Clip {row.clip} of {post.folder} is not in the loaded data; load the AU folder "
                               "the run was trained on.")
            aus = pd.DataFrame(data.clip(i), columns=list(data.columns))  # named: OpenFace or py-feat AUs
            att = np.asarray(row.attentions, dtype=np.float64)[: len(aus)]
            items.append({"clip": row.clip, "fold": k, "aus": aus, "attention": att,
                          "true": row.y, "pred": row.y_hat})
    return items


def pick_examples(items: list[dict], per_emotion: int = 1) -> list[dict]:
    """For each emotion, up to ``per_emotion`` correct and ``per_emotion`` misclassified clips."""
    chosen = []
    for emotion in EMOTIONS:
        mine = [it for it in items if it["true"] == emotion]
        chosen += [it for it in mine if it["pred"] == emotion][:per_emotion]
        chosen += [it for it in mine if it["pred"] != emotion][:per_emotion]
    return chosen


def attention_figures(post: RunPosteriors, data: dataset.ClipData, per_emotion: int = 1) -> dict[str, Path]:
    """Per fold (next to its checkpoint): a heatmap of one clip, a grid of examples per emotion,
    the mean attention profile and the AU importance per emotion; the same two summaries over
    all folds in ``analysis/``."""
    written: dict[str, Path] = {}
    everything = attention_items(post, data)
    groups = {k: [it for it in everything if it["fold"] == k] for k in sorted(post.tables)}
    for k, items in groups.items():
        folder = Run(post.run_dir).fold_dir(k) if post.run_dir is not None else analysis_dir(post) / f"fold_{k}"
        first = pick_examples(items, 1)[0]
        verdict = "correct" if first["true"] == first["pred"] else "misclassified"
        path = folder / f"attention_clip_{first['clip']}.png"
        attention_plots.attention_heatmap(first["aus"], first["attention"],
                                f"Fold {k}, clip {first['clip']}: true {first['true']}, predicted "
                                f"{first['pred']} ({verdict})", path=path)
        written[f"{k}-clip"] = path
        written[f"{k}-grid"] = folder / "attention_grid.png"
        attention_plots.attention_grid(pick_examples(items, per_emotion), f"Fold {k}: attention over AU frames, "
                             "correct and misclassified clips per emotion", path=written[f"{k}-grid"])
        written.update(_summaries(items, folder, f"Fold {k}", f"{k}-"))
    written.update(_summaries(everything, analysis_dir(post), "All folds", "all-"))
    return written


def _summaries(items: list[dict], folder: Path, label: str, key: str) -> dict[str, Path]:

    atts = [it["attention"] for it in items]
    labels = [it["true"] for it in items]
    profile = analysis.mean_attention_profile(atts, labels)
    importance = analysis.attention_au_importance([it["aus"] for it in items], atts, labels)
    atomic_write_csv(folder / "attention_profiles.csv", profile)
    atomic_write_csv(folder / "attention_au_importance.csv", importance)
    attention_plots.attention_profiles(profile, f"{label}: mean attention over normalized clip time",
                             path=folder / "attention_profiles.png")
    attention_plots.au_importance(importance, f"{label}: attention-weighted AU activity per emotion",
                        path=folder / "attention_au_importance.png")
    return {key + "profiles": folder / "attention_profiles.png", key + "importance": folder / "attention_au_importance.png"}


def clip_browser(post: RunPosteriors, data: dataset.ClipData):
    """An ipywidgets clip picker for JupyterLab: choose a fold and a clip, see its AU heatmap with
    the attention curve, true and predicted emotion."""
    import ipywidgets as widgets
    from IPython.display import display

    items = attention_items(post, data)
    by_fold = {k: [it for it in items if it["fold"] == k] for k in sorted(post.tables)}
    fold_pick = widgets.Dropdown(options=list(by_fold), description="Fold")
    clip_pick = widgets.Dropdown(description="Clip", layout=widgets.Layout(width="420px"))
    out = widgets.Output()

    def label(it):
        mark = "✓" if it["true"] == it["pred"] else "✗"
        return f"{it['clip']}  {it['true']} → {it['pred']} {mark}"

    def on_fold(_=None):
        clip_pick.options = [(label(it), n) for n, it in enumerate(by_fold[fold_pick.value])]
        clip_pick.value = 0  # start on the fold's first clip, never on an empty figure

    def on_clip(_=None):
        if clip_pick.value is None:
            return
        with out:
            out.clear_output(wait=True)
            display(clip_figure(by_fold[fold_pick.value][clip_pick.value]))

    fold_pick.observe(on_fold, names="value")
    clip_pick.observe(on_clip, names="value")
    on_fold()
    on_clip()
    return widgets.VBox([widgets.HBox([fold_pick, clip_pick]), out])


# --- scoring new clips (aus-emotion predict) ----------------------------------------------------

def prediction_figure(scores, clip: str):
    """One scored clip: its AU frames under the fold models' mean attention, the top posteriors in the title."""
    row = scores.table.set_index("clip").loc[clip]
    probs = row[[f"p_{e}" for e in EMOTIONS]].astype(float).sort_values(ascending=False)
    top = ", ".join(f"{name.removeprefix('p_')} {p:.2f}" for name, p in probs.head(3).items())
    named = f" (name says {row['named_emotion']})" if row["named_emotion"] else ""
    return attention_plots.attention_heatmap(scores.aus[clip], scores.attention[clip],
                                   f"{clip}{named}: predicted {row['predicted']} ({row['folds_agreeing']} fold "
                                   f"models agree)\nposteriors averaged over {scores.folds} fold models: {top}")


def write_predictions(scores, out_dir: str | os.PathLike | None = None) -> Path:
    """``predictions.csv`` and one ``attention_<clip>.png`` per clip into ``out_dir`` (default: a new
    ``<run>/predictions/predict-<time>/``). A folder that already holds predictions is refused, so
    an earlier scoring is never overwritten."""
    from aus_lib.runs import atomic_write_csv, default_run_name

    out = Path(out_dir) if out_dir is not None else scores.run_dir / "predictions" / default_run_name("predict")
    if (out / "predictions.csv").exists():
        raise FileExistsError(f"{out / 'predictions.csv'} already exists: give another output folder (or move it "
                              "away) so those predictions are kept.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "predictions.csv", scores.table, index=False)
    for clip in scores.table["clip"]:
        plots.save(prediction_figure(scores, clip), out / f"attention_{clip}.png")
    return out
