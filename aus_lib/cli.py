"""``aus-emotion``: the original script workflow as a thin command line over aus_lib.

    aus-emotion make-folds --aus-dir DIR --kfolds 5
    aus-emotion train params/RAVDESS_AUs.json --kfolds 5
    aus-emotion inference params/RAVDESS_AUs_posteriors.json --kfolds 5 --pretrained RUN_DIR
    aus-emotion analyse RUN_DIR
    aus-emotion baselines --folds-dir DIR [--actor-normalization zscore]
    aus-emotion sweep --space params/sweep_space.json --study NAME --n-trials 50
    aus-emotion predict RUN_DIR clip.csv [...]
    aus-emotion report [RUN_DIR]
"""
from __future__ import annotations

import argparse
import sys

from aus_lib.paths import OUTPUTS, default_folds_dir, resolve


def _make_folds(args) -> None:
    from aus_lib import dataset, folds

    manifest = dataset.build_manifest(dataset.resolve_aus_dir(args.aus_dir, seed=args.seed), strict=args.strict,
                                      vocal=args.vocal)
    print(f"Data: {dataset.describe_data(manifest)}")
    out = resolve(args.out_dir) if args.out_dir else default_folds_dir()
    table = folds.make_fold_files(manifest, out, args.kfolds, args.seed, overwrite=args.overwrite)
    print(f"{len(table)} clips, {table['actor'].nunique()} actors -> {args.kfolds} folds written to {out}")
    for k, actors in folds.folds_from_manifest(table).items():
        print(f"  fold {k}: test actors {', '.join(map(str, actors))}")


def _train(args) -> None:
    from aus_lib import dataset, folds, runs, schedule, train
    from aus_lib.config import describe, load_config

    cfg = load_config(args.params, {"kfolds": args.kfolds, "epochs": args.epochs, "patience": args.patience,
                                    "device": args.device, "selection": args.selection})
    folds_dir = resolve(args.folds_dir) if args.folds_dir else default_folds_dir()
    # Synthetic data only when the user named no data at all.
    manifest = folds.load_or_make(folds_dir, cfg.kfolds, aus_dir=resolve(args.aus_dir), seed=cfg.seed,
                                  synthetic=args.folds_dir is None and args.aus_dir is None)
    print(f"Data: {dataset.describe_data(manifest)} (fold lists in {folds_dir})")
    print(describe(cfg))
    out_dir = resolve(args.out_dir)
    run_dir = runs.prepare_run_dir(out_dir, args.run_name or runs.default_run_name("run"),
                                   train.run_fingerprint(cfg, manifest), resume=args.resume, overwrite=args.overwrite)
    schedule.fix_mmap_threshold()  # this process is ours, not a user's kernel
    result = train.train_cv(cfg, manifest, run_dir)
    runs.set_latest(out_dir, run_dir)
    print("FINAL CROSS VALIDATION RESULTS")
    print(result.table.round(4).to_string())
    print(f"Run written to {run_dir}")


def _inference(args) -> None:
    from aus_lib import inference, runs
    from aus_lib.config import load_config

    cfg = load_config(args.params, {"inference_data": args.partition, "kfolds": args.kfolds,
                                    "TRAINED_PATH": args.pretrained, "OUT_PATH": args.out_dir}, posteriors=True)
    trained = resolve(cfg.TRAINED_PATH)
    run = runs.Run.find(trained)
    out = resolve(cfg.OUT_PATH) if cfg.OUT_PATH else run.posteriors
    long = inference.extract_posteriors(run.dir, cfg.inference_data, out, kfolds=args.kfolds, device=args.device)
    print(f"Posteriors of {len(long)} clips ({cfg.inference_data}) written to {out}")


def _analyse(args) -> None:
    from aus_lib import analysis, runs

    target = resolve(args.run_dir) if args.run_dir else runs.latest_run(OUTPUTS / "runs")
    folder = runs.Run(target).posteriors if runs.Run(target).posteriors.is_dir() else target
    summary = analysis.summarize_posteriors(folder, args.partition)
    print(summary.round(4).to_string())
    pooled = summary.attrs["pooled"]
    print(f"Pooled accuracy: {100 * pooled['accuracy']:.2f} ± {100 * pooled['ci95']:.2f} % over {pooled['n']} clips")


def _baselines(args) -> None:
    from aus_lib import dataset, folds, report
    from aus_lib.runs import atomic_write_csv

    folds_dir = resolve(args.folds_dir)
    found = folds.manifests_in(folds_dir)
    if args.kfolds is None and len(found) != 1:
        names = ", ".join(p.name for p in found.values()) or "none"
        raise ValueError(f"{folds_dir} holds {len(found)} fold manifests ({names}); "
                         "give --kfolds, or point --folds-dir at a folder written by make-folds.")
    kfolds = args.kfolds or next(iter(found))
    manifest = folds.read_manifest(folds_dir, kfolds)
    kinds = (None,) if args.actor_normalization == "none" else (None, args.actor_normalization)
    table = report.baselines_table(manifest, dataset.load_clips(manifest, progress=False), kinds,
                                   minirocket=not args.no_minirocket)
    out = resolve(args.out) if args.out else folds_dir / f"baselines_{args.actor_normalization}.csv"
    atomic_write_csv(out, table.round(4))
    print(f"Baselines on the {kfolds} folds of {folds_dir} ({len(manifest)} clips), accuracy in %:")
    print(table.round(2).to_string())
    print(f"Written to {out}")
def _predict(args) -> None:
    from aus_lib import inference, report

    scores = inference.predict_clips(resolve(args.run_dir), [resolve(p) for p in args.clips], device=args.device)
    out = report.write_predictions(scores, resolve(args.out_dir) if args.out_dir else None)
    print(f"Mean posteriors of the {scores.folds} fold models of {scores.run_dir}:")
    print(scores.table.drop(columns=["file"]).round(3).to_string(index=False))
    print(f"Table and attention heatmaps written to {out}")


def _report(args) -> None:
    from aus_lib import notebooks, runs

    run = resolve(args.run_dir) if args.run_dir else runs.latest_run(OUTPUTS / "runs")
    pages = notebooks.export_html(run, resolve(args.notebooks_dir) if args.notebooks_dir else None,
                                  resolve(args.out_dir) if args.out_dir else None)
    print(f"HTML report of {run.name}: {len(pages) - 1} notebook(s), open {pages[-1]}")


def _sweep(args) -> None:
    from aus_lib import sweep

    sweep.run_sweep(args.space, args.study, args.n_trials, storage=args.storage, base_params=args.base_params,
                    overrides={"kfolds": args.kfolds, "epochs": args.epochs}, folds_dir=args.folds_dir,
                    aus_dir=args.aus_dir, final=not args.no_final,
                    heartbeat=sweep.DEFAULT_HEARTBEAT if args.heartbeat is None else args.heartbeat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aus-emotion", description="Emotion recognition from facial Action Unit "
                                     "sequences (OpenFace, RAVDESS): the notebooks' steps from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-folds", help="check an AU folder and write subject-wise fold lists")
    p.add_argument("--aus-dir", help="folder (any subfolder layout) or .zip of per-clip OpenFace or py-feat AU CSVs "
                   "(default: built-in synthetic set)")
    p.add_argument("--vocal", choices=("speech", "song", "both"), default="speech",
                   help="RAVDESS vocal channel to use (default speech, as the paper); the others are counted and skipped")
    p.add_argument("--kfolds", type=int, default=5)
    p.add_argument("--out-dir", help="where the fold lists go (default outputs/folds/default, where train looks)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--recursive", action="store_true", help=argparse.SUPPRESS)  # subfolders are always searched now
    p.add_argument("--strict", action="store_true", help="refuse AU values out of range instead of warning")
    p.add_argument("--overwrite", action="store_true", help="replace fold files of another split")
    p.set_defaults(func=_make_folds)

    p = sub.add_parser("train", help="cross-validated training (the original run.py train)")
    p.add_argument("params", help="params JSON file, e.g. params/RAVDESS_AUs.json")
    p.add_argument("--kfolds", type=int, default=None)
    p.add_argument("--folds-dir", help="fold lists from make-folds (default outputs/folds/default, where make-folds "
                   "writes them; with neither this nor --aus-dir, the built-in synthetic set)")
    p.add_argument("--aus-dir", help="AU folder: the folds are made from it when --folds-dir has no fold lists")
    p.add_argument("--out-dir", default=str(OUTPUTS / "runs"))
    p.add_argument("--run-name", help="default: a new unique name")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default from the params file)")
    p.add_argument("--selection", choices=("test_fold", "inner"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of --run-name")
    p.add_argument("--overwrite", action="store_true", help="start --run-name again (old folder kept aside)")
    p.set_defaults(func=_train)

    p = sub.add_parser("inference", help="posterior files of a trained run (the original run.py inference)")
    p.add_argument("params", help="posteriors params file, e.g. params/RAVDESS_AUs_posteriors.json")
    p.add_argument("--kfolds", type=int, default=None)
    p.add_argument("--pretrained", help="run folder (or a folder of runs: its newest); default TRAINED_PATH")
    p.add_argument("--partition", choices=("train", "val", "all"), help="default inference_data")
    p.add_argument("--out-dir", help="default OUT_PATH, or <run>/posteriors")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_inference)

    p = sub.add_parser("baselines", help="static models and MiniRocket on the folds of make-folds, with and "
                       "without per-actor normalization")
    p.add_argument("--folds-dir", required=True, help="fold lists and manifest from make-folds")
    p.add_argument("--kfolds", type=int, help="default: the folder's only manifest")
    p.add_argument("--actor-normalization", choices=("none", "zscore", "robust"), default="none",
                   help="also run every baseline after this label-free per-actor normalization")
    p.add_argument("--no-minirocket", action="store_true", help="skip MiniRocket (its first run compiles for ~20 s)")
    p.add_argument("--out", help="CSV to write (default <folds-dir>/baselines_<normalization>.csv)")
    p.set_defaults(func=_baselines)

    p = sub.add_parser("analyse", help="per-fold and mean metrics of a run or a folder of posterior files")
    p.add_argument("run_dir", nargs="?", help="run folder or posterior folder (default: newest run)")
    p.add_argument("--partition", default="val")
    p.set_defaults(func=_analyse)

    p = sub.add_parser("predict", help="score your own AU files (OpenFace or py-feat CSVs) with a run's fold models")
    p.add_argument("run_dir", help="a finished run folder, e.g. outputs/runs/<run>")
    p.add_argument("clips", nargs="+", help="AU CSV files; RAVDESS names (..-AA.csv) group clips of one actor for "
                   "the run's actor normalization")
    p.add_argument("--out-dir", help="where predictions.csv and the heatmaps go (default <run>/predictions/predict-<time>)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_predict)

    p = sub.add_parser("report", help="export a run's executed notebooks to self-contained HTML")
    p.add_argument("run_dir", nargs="?", help="run folder (default: the newest run)")
    p.add_argument("--notebooks-dir", help="executed notebooks (default outputs/notebooks/<run>/ or <run>/notebooks/)")
    p.add_argument("--out-dir", help="default <run>/report/")
    p.set_defaults(func=_report)

    p = sub.add_parser("sweep", help="nested hyperparameter search on Optuna; workers share the study")
    p.add_argument("--space", required=True, help="search space JSON, e.g. params/sweep_space.json")
    p.add_argument("--study", required=True, help="study name; results go to outputs/sweeps/<study>/")
    p.add_argument("--storage", help="postgresql://user:pass@host/db for many machines, or a journal file "
                   "(default outputs/sweeps/<study>/journal.log)")
    p.add_argument("--n-trials", type=int, required=True, help="finished trials the study should hold, all workers together")
    p.add_argument("--kfolds", type=int)
    data = p.add_mutually_exclusive_group()
    data.add_argument("--folds-dir", help="fold lists from make-folds (default outputs/folds/synthetic_<K>CV)")
    data.add_argument("--aus-dir", help="AU folder (default: the synthetic set)")
    p.add_argument("--epochs", type=int, help="epochs per fold (default from --base-params)")
    p.add_argument("--base-params", default="params/RAVDESS_AUs.json", help="everything the space does not search")
    p.add_argument("--no-final", action="store_true", help="skip the outer-fold evaluation of the best trial")
    p.add_argument("--heartbeat", type=int, help="seconds between a database worker's heartbeats (default 60)")
    p.set_defaults(func=_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"aus-emotion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
