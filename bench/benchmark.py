"""Benchmark: the fast engine side by side with a reference that reproduces the original design's costs.

    .venv/bin/python bench/benchmark.py [--epochs 2] [--folds 5] [--mode both|fast|reference]
                                        [--device cpu|cuda] [--out bench/results/<name>.json]
                                        [--repeat 1] [--threads N] [--reference-threads 1]

On the default synthetic data set (1440 clips) and the paper config (params/RAVDESS_AUs.json,
early stopping off so both modes run exactly ``--epochs`` epochs per fold) it measures:

* loading: the manifest and the clips from CSV (cold: no tensor cache), then from the cache;
* the K-fold cross-validation in each mode: wall time, seconds per epoch, per fold-epoch, and
  the full 300-epoch CV extrapolated from them (labelled as such);
* inference: posteriors and attention for every clip (each fold's checkpoint on its test fold);
* peak memory (resident set size of the process that ran the phase; on CUDA also the GPU's).

Modes (``bench/README.md`` explains them):

* ``fast``: ``train.train_cv`` with ``engine="batched"`` (:mod:`aus_lib.schedule`);
* ``reference``: the original design in this codebase: the packed model, one fold after the
  other, every clip parsed from its CSV with pandas on every access (a ``Dataset``), an extra
  evaluation pass over the training set after every epoch, and the whole model object pickled
  whenever validation improves. It computes exactly what ``engine="plain"`` computes (the tests
  pin this), so the ratio is a ratio of costs, not of different work.

Every phase runs in a fresh Python process, so memory peaks and thread settings do not leak
from one into the next. Results go to ``--out`` (JSON) and the same name with ``.md`` (a table).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aus_lib import dataset, fold, inference, openface, schedule, train
from aus_lib.config import Config, load_config
from aus_lib.folds import assign_folds, make_folds
from aus_lib.paths import PARAMS_DIR
from aus_lib.checkpoints import apply_normalization
from aus_lib.fold import FoldRun
from aus_lib.folds import FoldSplit, split_fold

PARAMS = PARAMS_DIR / "RAVDESS_AUs.json"
PAPER_EPOCHS = 300  # the paper config's epochs: what the per-epoch figures are extrapolated to
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


# --- the reference: the original design's costs ------------------------------------------------------

class CsvClips(torch.utils.data.Dataset):
    """The original ``Dataset``: every access parses the clip's CSV (pandas), nothing is cached."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        self.paths, self.labels = list(paths), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames = openface.read_aus(self.paths[i]).to_numpy(np.float32)
        return torch.from_numpy(frames.copy()), int(self.labels[i])


class CsvTensors:
    """:class:`aus_lib.fold.FoldTensors`' interface, with every batch read from the CSV files."""

    def __init__(self, clips: CsvClips, lengths: np.ndarray, normalization: dict | None,
                 device: torch.device) -> None:
        self.clips, self.normalization = clips, normalization
        self.host_lengths = np.asarray(lengths, dtype=np.int64)
        self.lengths = torch.from_numpy(self.host_lengths).to(device)
        self.labels = torch.from_numpy(clips.labels.astype(np.int64)).to(device)
        self.device = device
        self.frames = int(self.host_lengths.max())

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.clips[int(i)] for i in index]
        lengths = torch.tensor([len(x) for x, _ in items], dtype=torch.int64)
        x = torch.nn.utils.rnn.pad_sequence([x for x, _ in items], batch_first=True)
        x = apply_normalization(x, lengths, self.normalization)
        labels = torch.tensor([y for _, y in items], dtype=torch.int64)
        return x.to(self.device), lengths.to(self.device), labels.to(self.device)


class ReferenceFoldRun(FoldRun):
    """A fold trained as the original design did: same computation as ``engine="plain"``, its costs."""

    def __init__(self, cfg: Config, data: dataset.ClipData, paths: list[str], k: int, split: FoldSplit,
                 fold_dir: Path, device: torch.device) -> None:
        super().__init__(cfg, data, k, split, fold_dir, packed=True, device=device, resume=False)
        self.tensors = CsvTensors(CsvClips(paths, data.labels), data.lengths, self.normalization, device)

    def train_and_validate(self) -> tuple[float, float, dict]:
        train_loss, train_accuracy, val = super().train_and_validate()
        # The original evaluated the whole training set after every epoch (its metrics went to the log).
        fold.evaluate(self.model, self.tensors, self.split.train, self.weights)
        return train_loss, train_accuracy, val

    def record(self, train_loss: float, train_accuracy: float, val: dict, seconds: float) -> dict:
        row = super().record(train_loss, train_accuracy, val, seconds)
        if row["best"]:
            torch.save(self.model, self.fold_dir / "model.pt")  # the whole object, pickled, as the original
        return row


def reference_cv(cfg: Config, manifest, data: dataset.ClipData, run_dir: Path,
                 on_epoch_end: fold.EpochHook | None = None) -> list[fold.FoldResult]:
    """The K folds one after the other, each a :class:`ReferenceFoldRun`."""
    device = fold.resolve_device(cfg.device)
    results = []
    with schedule.torch_settings(cfg):
        for k in range(1, cfg.kfolds + 1):
            run = ReferenceFoldRun(cfg, data, list(manifest["path"]), k, split_fold(manifest, k, cfg),
                                   run_dir / f"fold_{k}", device)
            while not run.done:
                row = run.run_epoch()
                if on_epoch_end is not None:
                    on_epoch_end(k, row["epoch"], row)
            results.append(run.finish())
    return results


# --- phases (each in its own process) -------------------------------------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used: on a shared machine the
    wall time depends on what else runs, the CPU time much less."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _manifest(aus_dir: Path, folds: int, seed: int):
    manifest = dataset.build_manifest(aus_dir, progress=False)
    return assign_folds(manifest, make_folds(manifest["actor"].value_counts().to_dict(), folds, seed=seed))


def phase_load(args: argparse.Namespace) -> dict:
    """Cold: manifest (every CSV checked) and clips parsed from CSV; then a fresh cache is written."""
    started = time.perf_counter()
    parsed: dict = {}  # the clips read while checking them, handed on so they are not parsed twice
    manifest = dataset.build_manifest(args.aus_dir, progress=False, parsed=parsed)
    manifest_s = time.perf_counter() - started
    clips_started = time.perf_counter()
    dataset.load_clips(manifest, cache_dir=args.cache_dir, progress=False, parsed=parsed)
    return {"clips": len(manifest), "manifest_s": manifest_s, "clips_s": time.perf_counter() - clips_started,
            "cold_s": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}


def phase_cached(args: argparse.Namespace) -> dict:
    """The clips from the tensor cache (given the manifest, as notebooks 02-03 have it)."""
    manifest = _manifest(args.aus_dir, args.folds, args.seed)
    started = time.perf_counter()
    data = dataset.load_clips(manifest, cache_dir=args.cache_dir, progress=False)
    return {"clips": len(data), "cached_s": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}


def phase_cv(args: argparse.Namespace) -> dict:
    """One mode's K-fold CV for ``args.epochs`` epochs, then (fast mode) inference for every clip."""
    process_started = args.process_started
    overrides = {"epochs": args.epochs, "patience": args.patience, "kfolds": args.folds, "device": args.device,
                 "seed": args.seed, "engine": args.engine if args.mode == "fast" else "plain",
                 "num_threads": args.threads if args.mode == "fast" else args.reference_threads}
    cfg = load_config(PARAMS, overrides)
    if args.mode == "reference":
        cfg = cfg.replace(micro_batch=None)  # the original passed whole batches forward and backward
    manifest = _manifest(args.aus_dir, args.folds, args.seed)
    data = dataset.load_clips(manifest, cache_dir=args.cache_dir, progress=False)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{args.mode}-"))
    epoch_ends: dict[int, list[float]] = {}

    def clock(k: int, epoch: int, row: dict) -> None:
        epoch_ends.setdefault(epoch, []).append(time.perf_counter())

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started, cpu_started = time.perf_counter(), _cpu_s()
    if args.mode == "fast":
        schedule.fix_mmap_threshold()  # as the CLI does: the measured peak memory assumes it
        result = train.train_cv(cfg, manifest, run_dir, data=data, progress=False, on_epoch_end=clock)
        histories = list(result.histories.values())
        table = result.table
    else:
        results = reference_cv(cfg, manifest, data, run_dir, on_epoch_end=clock)
        histories = [r.history for r in results]
        table = train.cv_table(results)
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu_started
    last = max(epoch_ends)  # < args.epochs when early stopping ended every fold sooner
    out = {"mode": args.mode, "epochs": args.epochs, "folds": args.folds, "threads": cfg.num_threads,
           "patience": args.patience, "epochs_run_max": last, "cv_wall_s": wall, "cv_cpu_s": cpu,
           "process_cpu_s": _cpu_s(),
           "process_wall_s": time.perf_counter() - process_started,
           "cv_s_per_epoch": (max(epoch_ends[last]) - started) / last,
           "fold_epoch_s_median": statistics.median(float(s) for h in histories for s in h["seconds"]),
           "first_epoch_all_folds_s_from_start": max(epoch_ends[1]) - process_started,
           "mean_accuracy": float(table.loc["mean", "accuracy"]),
           "peak_rss_mb_cv": _peak_rss_mb()}
    if args.mode == "fast":
        started, cpu_started = time.perf_counter(), _cpu_s()
        long = inference.extract_posteriors(run_dir, "val", device=args.device, progress=False, data=data)
        out["inference_s"] = time.perf_counter() - started
        out["inference_cpu_s"] = _cpu_s() - cpu_started
        out["inference_clips"] = int(len(long))
    if args.device.startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = _peak_rss_mb()
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


PHASES = {"load": phase_load, "cached": phase_cached, "cv": phase_cv}


# --- the driver ---------------------------------------------------------------------------------------

def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "torch_default_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_phase(name: str, args: argparse.Namespace, **extra) -> dict:
    """Run one phase in a fresh interpreter; its JSON result, with the load average around it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--epochs", str(args.epochs),
           "--folds", str(args.folds), "--device", args.device, "--seed", str(args.seed),
           "--aus-dir", str(args.aus_dir), "--cache-dir", str(args.cache_dir),
           "--reference-threads", str(args.reference_threads), "--patience", str(args.patience)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--engine", args.engine]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Phase {name} {extra} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def median_of(runs: list[dict]) -> dict:
    """One result from repeated runs of a phase: the median of every number, the first of the rest."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(run[key] for run in runs)
        elif isinstance(value, list):
            out[key] = [run[key] for run in runs]
    out["repeats"] = len(runs)
    return out


def summarize(args: argparse.Namespace, results: dict, raw: dict[str, list[dict]]) -> dict:
    """Derived figures: extrapolations and reference / fast ratios (of the medians)."""
    summary = {}
    for mode in ("reference", "fast"):
        cv = results.get(f"cv_{mode}")
        if cv:
            extra = cv["cv_s_per_epoch"] * (PAPER_EPOCHS - args.epochs)
            summary[f"{mode}_cv_{PAPER_EPOCHS}_epochs_extrapolated_s"] = cv["cv_wall_s"] + extra
            summary[f"{mode}_fold_epoch_effective_s"] = cv["cv_s_per_epoch"] / args.folds
    if "cv_reference" in results and "cv_fast" in results:
        ref, fast = results["cv_reference"], results["cv_fast"]
        summary["ratio_cv_wall"] = ref["cv_wall_s"] / fast["cv_wall_s"]
        summary["ratio_cv_per_epoch"] = ref["cv_s_per_epoch"] / fast["cv_s_per_epoch"]
        summary["ratio_cv_cpu"] = ref["cv_cpu_s"] / fast["cv_cpu_s"]
        # Repeat i ran the two modes back to back, so their ratio saw about the same load.
        summary["ratio_cv_wall_per_repeat"] = [r["cv_wall_s"] / f["cv_wall_s"]
                                               for r, f in zip(raw["cv_reference"], raw["cv_fast"])]
    return summary


def markdown(report: dict) -> str:
    m, r, s = report["machine"], report["results"], report["summary"]
    where = f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
    stopping = "early stopping off" if report["patience"] == -1 else f"patience {report['patience']}"
    lines = [f"Benchmark {report['date']}: {where}, torch {m['torch']}, device {m['device']}, "
             f"{r['load']['clips']} synthetic clips, paper config, {report['folds']} folds x "
             f"{report['epochs']} epochs ({stopping}), fast engine {report.get('engine', 'batched')}; medians of "
             f"{report['repeat']} run(s) per phase.", "",
             "| measure | reference | fast | ratio |", "|---|---|---|---|"]
    ref, fast = r.get("cv_reference", {}), r.get("cv_fast", {})

    def cell(d: dict, key: str, fmt: str = "{:.2f} s") -> str:
        return fmt.format(d[key]) if key in d else "-"

    def ratio(key: str) -> str:
        return f"{ref[key] / fast[key]:.1f}x" if key in ref and key in fast else "-"

    lines += [
        f"| CV wall, {report['folds']} folds x {report['epochs']} epochs (measured) | {cell(ref, 'cv_wall_s')} | "
        f"{cell(fast, 'cv_wall_s')} | {ratio('cv_wall_s')} |",
        f"| CV CPU seconds, user + system, all threads (measured) | {cell(ref, 'cv_cpu_s')} | "
        f"{cell(fast, 'cv_cpu_s')} | {ratio('cv_cpu_s')} |",
        f"| whole process: imports, cached load, CV (measured) | {cell(ref, 'process_wall_s')} | "
        f"{cell(fast, 'process_wall_s')} | {ratio('process_wall_s')} |",
        f"| CV seconds per epoch, all folds (measured) | {cell(ref, 'cv_s_per_epoch')} | "
        f"{cell(fast, 'cv_s_per_epoch')} | {ratio('cv_s_per_epoch')} |",
        f"| seconds per fold-epoch, effective (= per epoch / folds) | "
        f"{cell(s, 'reference_fold_epoch_effective_s')} | {cell(s, 'fast_fold_epoch_effective_s')} | "
        f"{ratio('cv_s_per_epoch')} |",
        f"| seconds per fold-epoch, median of the histories' own timings | {cell(ref, 'fold_epoch_s_median')} | "
        f"{cell(fast, 'fold_epoch_s_median')} | - |",
        f"| until every fold finished epoch 1, from process start | "
        f"{cell(ref, 'first_epoch_all_folds_s_from_start')} | {cell(fast, 'first_epoch_all_folds_s_from_start')} | "
        f"{ratio('first_epoch_all_folds_s_from_start')} |",
        f"| full CV at {PAPER_EPOCHS} epochs (EXTRAPOLATED) | "
        f"{cell(s, f'reference_cv_{PAPER_EPOCHS}_epochs_extrapolated_s', '{:.0f} s')} | "
        f"{cell(s, f'fast_cv_{PAPER_EPOCHS}_epochs_extrapolated_s', '{:.0f} s')} | - |",
        f"| peak memory of the CV process (RSS) | {cell(ref, 'peak_rss_mb_cv', '{:.0f} MB')} | "
        f"{cell(fast, 'peak_rss_mb_cv', '{:.0f} MB')} | - |",
        f"| mean test accuracy (sanity: equal work; paper config, test-fold selection: leaky) | "
        f"{cell(ref, 'mean_accuracy', '{:.4f}')} | {cell(fast, 'mean_accuracy', '{:.4f}')} | - |",
        f"| CV wall ratio of each repeat (modes back to back) | - | - | "
        f"{', '.join(f'{x:.1f}x' for x in s.get('ratio_cv_wall_per_repeat', [])) or '-'} |",
        f"| load average before / after, each repeat (shared machine) | {ref.get('load_average', '-')} | "
        f"{fast.get('load_average', '-')} | - |",
        "", "| measure | value |", "|---|---|",
        f"| cold load: manifest (every CSV checked) | {r['load']['manifest_s']:.2f} s |",
        f"| cold load: clips parsed from CSV | {r['load']['clips_s']:.2f} s |",
        f"| cold load total | {r['load']['cold_s']:.2f} s |",
        f"| cached load (clips from the tensor cache) | {r['cached']['cached_s']:.2f} s |",
    ]
    if "inference_s" in fast:
        lines.append(f"| inference: posteriors + attention for {fast['inference_clips']} clips "
                     f"({report['folds']} checkpoints loaded, files written) | {fast['inference_s']:.2f} s "
                     f"({fast['inference_cpu_s']:.2f} CPU s) |")
    if "gpu_peak_mb" in fast:
        lines.append(f"| GPU peak memory (fast) | {fast['gpu_peak_mb']:.0f} MB |")
    lines.append("| peak memory of the fast CV process incl. inference (RSS) | "
                 f"{cell(fast, 'peak_rss_mb', '{:.0f} MB')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    process_started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fold in both modes (default 2)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--mode", choices=("fast", "reference", "both"), default="both")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file; the table goes beside it (.md)")
    parser.add_argument("--engine", choices=["batched", "stacked"], default="batched",
                        help="engine of the fast mode (stacked: CUDA only, all folds in one computation)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cfg.num_threads of the fast mode (default: torch's default, one per core)")
    parser.add_argument("--reference-threads", type=int, default=1,
                        help="torch threads of the reference (default 1: its fastest setting on a shared 2-core "
                             "machine; see bench/README.md)")
    parser.add_argument("--patience", type=int, default=-1,
                        help="early stopping patience (default -1: off, so every fold runs --epochs epochs); "
                             "--epochs 300 --patience 30 is the paper config")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every phase this many times (modes alternating) and report medians")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--aus-dir", type=Path, default=None, help="default: the built-in synthetic set")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)  # the driver's, for its phases
    args = parser.parse_args(argv)
    args.process_started = process_started
    args.aus_dir = args.aus_dir or dataset.resolve_aus_dir(None)
    if args.phase:
        if args.phase == "cv" and args.mode == "both":
            raise SystemExit("--phase cv needs --mode fast or reference")
        print(json.dumps(PHASES[args.phase](args)))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}).")

    args.cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))  # so that "cold" is cold
    raw: dict[str, list[dict]] = {}
    try:
        modes = ("reference", "fast") if args.mode == "both" else (args.mode,)
        for repeat in range(1, args.repeat + 1):
            print(f"[{repeat}/{args.repeat}] loading {args.aus_dir} (cold, then cached) ...", flush=True)
            shutil.rmtree(args.cache_dir, ignore_errors=True)
            raw.setdefault("load", []).append(run_phase("load", args))
            raw.setdefault("cached", []).append(run_phase("cached", args))
            for mode in modes:
                print(f"[{repeat}/{args.repeat}] {mode}: {args.folds} folds x {args.epochs} epochs ...", flush=True)
                raw.setdefault(f"cv_{mode}", []).append(run_phase("cv", args, mode=mode))
    finally:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
    results = {name: median_of(runs) for name, runs in raw.items()}
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "epochs": args.epochs, "folds": args.folds,
              "patience": args.patience, "repeat": args.repeat, "engine": args.engine, "machine": machine(args.device),
              "results": results, "runs": raw}
    report["summary"] = summarize(args, results, raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"Written {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
