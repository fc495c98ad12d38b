"""Print how the synthetic data set compares with real RAVDESS and how hard it is.

    .venv/bin/python bench/calibrate_synthetic.py [--seed 2020] [--out DIR] [--plot PNG] [--no-mlp]

Generates the full synthetic set (into a temporary folder unless --out is given), then prints
real vs synthetic statistics (the real clips of actors 1-2 from shared/data/ravdess_real), the
static baselines (SVC and MLP on per-clip AU averages, actor-disjoint 5-fold CV) and the same SVC
given crude timing features too, which shows how much information the averages lose.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aus_lib import baselines, paths, synthetic
from aus_lib.folds import PAPER_FOLDS
from aus_lib.openface import AU_INTENSITY
from aus_lib.ravdess import parse_name


def timing_features(clip: pd.DataFrame) -> np.ndarray:
    """Averages plus what an average loses: per-third means, mean |step| and where each AU peaks."""
    values = clip.to_numpy()
    intensity = clip[list(AU_INTENSITY)].to_numpy()
    thirds = [part.mean(axis=0) for part in np.array_split(intensity, 3)]
    steps = np.abs(np.diff(intensity, axis=0)).mean(axis=0)
    peak = intensity.argmax(axis=0) / len(intensity)
    return np.concatenate([values.mean(axis=0), *thirds, steps, peak])


def timing_svc_accuracy(data_dir: Path) -> float:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import SVC

    clips = synthetic._read_folder(data_dir)
    features = np.array([timing_features(c) for c in clips.values()])
    labels = np.array([parse_name(n).label for n in clips])
    actors = np.array([parse_name(n).actor for n in clips])
    correct = 0
    for members in PAPER_FOLDS.values():
        test = np.isin(actors, members)
        clf = make_pipeline(MinMaxScaler(), SVC(C=1.0)).fit(features[~test], labels[~test])
        correct += int((clf.predict(features[test]) == labels[test]).sum())
    return correct / len(labels)


def static_baseline_accuracy(data_dir: Path, model: str) -> float:
    """Pooled accuracy of a static classifier on per-clip AU averages, over the paper's folds:
    ``"svc"`` = SVC C=1 after min-max scaling, ``"mlp"`` = one hidden layer of 80 after standardization."""
    param, norm = {"svc": (1.0, "minmax"), "mlp": (80, "standard")}[model]
    table = baselines.average_table(data_dir)
    return baselines.static_cv(table, model, param, norm).attrs["pooled"]["accuracy"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="folder for the synthetic set (default: a temporary folder)")
    parser.add_argument("--real", type=Path, default=paths.SHARED_DATA / "ravdess_real")
    parser.add_argument("--plot", type=Path, help="also save the real-vs-synthetic figure as this PNG")
    parser.add_argument("--no-mlp", action="store_true", help="skip the MLP baseline (the slowest step)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aus-synthetic-") as tmp:
        out = args.out or Path(tmp)
        start = time.perf_counter()
        synthetic.ensure_default(out, seed=args.seed)
        print(f"synthetic set (seed {args.seed}) ready in {time.perf_counter() - start:.1f} s: {out}")
        pd.set_option("display.width", 160)
        if args.real.is_dir():
            table = synthetic.compare_to_real(args.real, out)
            per_au = table.drop(index="clip")[["real", "synthetic"]].unstack("statistic")
            per_au = per_au.swaplevel(axis=1).sort_index(axis=1)
            print("\nper-AU statistics (real = actors 1-2; synthetic = all 24 actors)")
            print(per_au.round(3).to_string())
            print("\nclip-level statistics")
            print(table.loc["clip"].round(3).to_string())
            if args.plot:
                synthetic.plot_real_vs_synthetic(args.real, out, args.plot)
                print(f"\nfigure saved to {args.plot}")
        else:
            print(f"\n{args.real} is absent: real-data comparison skipped")
        print("\nactor-disjoint 5-fold accuracy (chance 12.5 %; real RAVDESS static SVC: 60.2 %)")
        models = ["svc"] if args.no_mlp else ["svc", "mlp"]
        for model in models:
            start = time.perf_counter()
            accuracy = static_baseline_accuracy(out, model)
            print(f"  static {model:4s} on 35 clip averages: {accuracy:6.1%}  ({time.perf_counter() - start:.0f} s)")
        print(f"  svc with timing features too:     {timing_svc_accuracy(out):6.1%}")


if __name__ == "__main__":
    main()
