"""How closely two engines or devices agree: one cross-validation trained twice, compared fold by fold.

    .venv/bin/python bench/engine_agreement.py --a cpu:batched --b cuda:stacked [--epochs 3] [--folds 5]
                                               [--out bench/results/<name>.json]

Trains the paper config (``params/RAVDESS_AUs.json``, early stopping off, so both sides run the same
epochs) on the built-in synthetic set once per side (``DEVICE:ENGINE``; ``micro_batch`` left at
"auto", i.e. what a user gets on that device) and reports, per fold and overall: the largest
absolute difference of each history column, of any weight of the fold's checkpoint, the share of
test clips predicted the same, and both test accuracies. This is how a tolerance for "CUDA = CPU"
is measured rather than assumed (bench/README.md); two CPU engines give a reference point
(``--a cpu:batched --b cpu:plain``: masked vs packed model, within float rounding).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aus_lib import dataset, train
from aus_lib.checkpoints import load_checkpoint
from aus_lib.config import load_config
from aus_lib.fold import HISTORY_COLUMNS
from aus_lib.folds import assign_folds, make_folds
from aus_lib.inference import predict
from aus_lib.paths import PARAMS_DIR

COMPARED = [c for c in HISTORY_COLUMNS if c not in ("epoch", "best", "seconds")]


def side(text: str) -> tuple[str, str]:
    """``DEVICE:ENGINE`` (``cuda:0:stacked`` too) -> (device, engine)."""
    device, _, engine = text.rpartition(":")
    if not device or engine not in ("plain", "batched", "stacked"):
        raise argparse.ArgumentTypeError(f"{text!r}: use DEVICE:ENGINE, e.g. cpu:batched or cuda:stacked")
    return device, engine


def train_side(device: str, engine: str, epochs: int, folds: int, seed: int, manifest: pd.DataFrame,
               data: dataset.ClipData, run_dir: Path) -> train.CVResult:
    cfg = load_config(PARAMS_DIR / "RAVDESS_AUs.json", {"epochs": epochs, "patience": -1, "kfolds": folds,
                                                       "device": device, "engine": engine, "seed": seed})
    return train.train_cv(cfg, manifest, run_dir, data=data, progress=False)


def compare(a_dir: Path, b_dir: Path, a: train.CVResult, b: train.CVResult, data: dataset.ClipData,
            folds: int) -> pd.DataFrame:
    """One row per fold: the largest differences and the agreement of the test predictions."""
    rows = []
    for k in range(1, folds + 1):
        history = (a.histories[k][COMPARED] - b.histories[k][COMPARED]).abs().max()
        model_a, checkpoint_a = load_checkpoint(a_dir / f"fold_{k}" / "checkpoint.pt")
        model_b, checkpoint_b = load_checkpoint(b_dir / f"fold_{k}" / "checkpoint.pt")
        weights = max(float((checkpoint_a["model"][name].float() - checkpoint_b["model"][name].float()).abs().max())
                      for name in checkpoint_a["model"])
        test = np.flatnonzero(np.isin(data.actors, checkpoint_a["test_actors"]))
        clips = data.subset(test)
        same = predict(model_a, clips).predicted == predict(model_b, clips).predicted
        rows.append({"fold": k, **{f"max_abs_diff_{c}": float(history[c]) for c in COMPARED},
                     "max_abs_diff_weight": weights, "same_test_prediction": float(same.mean()),
                     "accuracy_a": float(a.table.loc[k, "accuracy"]), "accuracy_b": float(b.table.loc[k, "accuracy"])})
    table = pd.DataFrame(rows).set_index("fold")
    worst = table.filter(like="max_abs_diff").max()
    table.loc["all"] = {**worst.to_dict(), "same_test_prediction": table["same_test_prediction"].mean(),
                        "accuracy_a": table["accuracy_a"].mean(), "accuracy_b": table["accuracy_b"].mean()}
    return table


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown (written here: pandas' to_markdown needs the tabulate package)."""
    header = ["fold", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(k), *(f"{v:.3g}" for v in row)]) + " |" for k, row in table.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=side, default=("cpu", "batched"), help="DEVICE:ENGINE (default cpu:batched)")
    parser.add_argument("--b", type=side, required=True, help="DEVICE:ENGINE, e.g. cuda:stacked")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--aus-dir", type=Path, default=None, help="default: the built-in synthetic set")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (a markdown table is written beside it)")
    args = parser.parse_args(argv)
    manifest = dataset.build_manifest(dataset.resolve_aus_dir(args.aus_dir), progress=False)
    manifest = assign_folds(manifest, make_folds(manifest["actor"].value_counts().to_dict(), args.folds,
                                                 seed=args.seed))
    data = dataset.load_clips(manifest, progress=False)
    with tempfile.TemporaryDirectory(prefix="agreement-") as tmp:
        runs = {}
        for name, (device, engine) in (("a", args.a), ("b", args.b)):
            print(f"training {name} = {device}:{engine}, {args.folds} folds x {args.epochs} epochs ...", flush=True)
            runs[name] = train_side(device, engine, args.epochs, args.folds, args.seed, manifest, data,
                                    Path(tmp) / name)
        table = compare(Path(tmp) / "a", Path(tmp) / "b", runs["a"], runs["b"], data, args.folds)
    title = (f"{':'.join(args.a)} vs {':'.join(args.b)}, paper config, {args.folds} folds x {args.epochs} epochs, "
             f"torch {torch.__version__}"
             + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(title)
    print(table.to_string(float_format=lambda v: f"{v:.3g}"))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"title": title, "table": json.loads(table.to_json(orient="index"))},
                                       indent=2))
        args.out.with_suffix(".md").write_text(f"{title}\n\n{markdown(table)}\n")
        print(f"Written {args.out} and {args.out.with_suffix('.md')}")
    return table


if __name__ == "__main__":
    main()
