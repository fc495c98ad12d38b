"""The speed work changes no result: the fast engine, the plain engine, the stacked (GPU) engine and
the benchmark's reference mode compute the same folds (see bench/README.md for what each pins)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aus_lib import checkpoints, dataset, fold, inference, schedule, stacked, train
from aus_lib.config import ConfigError, load_config
from aus_lib.folds import assign_folds, make_folds, split_fold
from aus_lib.model import BatchMasks, DropoutNoise, ModelConfig, Sequence1Modal, lengths_to_mask

# The paper model (dropout 0.3 everywhere), made small so every test trains in seconds.
SMALL = {"epochs": 2, "kfolds": 2, "batch_size": 32, "model_params.encoder.dim": 8, "device": "cpu", "num_threads": 1,
         "patience": -1}
STACKED_TOLERANCE = 1e-5  # the stacked engine's different matrix shapes round differently (CPU, float32)
BENCHMARK = Path(__file__).resolve().parents[1] / "bench" / "benchmark.py"


def folds_of(tiny_synthetic, kfolds: int):
    """Every other clip of the 4 synthetic actors (all 8 emotions each), in ``kfolds`` folds."""
    manifest = dataset.build_manifest(tiny_synthetic, progress=False).iloc[::2].reset_index(drop=True)
    manifest = assign_folds(manifest, make_folds(manifest["actor"].value_counts().to_dict(), kfolds, seed=2020))
    return manifest, dataset.load_clips(manifest, cache=False, progress=False)


@pytest.fixture(scope="module")
def two_folds(tiny_synthetic):
    """4 actors in 2 folds of 2."""
    return folds_of(tiny_synthetic, 2)


@pytest.fixture(scope="module")
def three_folds(tiny_synthetic):
    """4 actors in 3 folds of 2, 1 and 1 actors: training sets of unequal size."""
    return folds_of(tiny_synthetic, 3)


def cfg_of(**overrides):
    """The small paper config; a None override sets null (notebook overrides would skip it)."""
    nulls = [key for key, value in overrides.items() if value is None]
    cfg = load_config("params/RAVDESS_AUs.json", {**SMALL, **overrides})
    return cfg.replace(**dict.fromkeys(nulls)) if nulls else cfg


def each_fold_alone(cfg, manifest, data, out: Path, packed: bool = False) -> dict[int, fold.FoldResult]:
    with schedule.torch_settings(cfg):
        return {k: fold.train_fold(cfg, data, k, split_fold(manifest, k, cfg), out / f"fold_{k}",
                                    packed=packed) for k in range(1, cfg.kfolds + 1)}


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds").reset_index(drop=True)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoint.pt", weights_only=True)["model"]


def fold_runs(cfg, manifest, data, out: Path, resume: bool = False) -> list[fold.FoldRun]:
    return [fold.FoldRun(cfg, data, k, split_fold(manifest, k, cfg), out / f"fold_{k}", packed=False,
                          device=torch.device("cpu"), resume=resume) for k in range(1, cfg.kfolds + 1)]


def assert_close_folds(results: list[fold.FoldResult], alone: dict[int, fold.FoldResult], out: Path,
                       alone_out: Path) -> None:
    for result in results:
        k = result.fold
        pd.testing.assert_frame_equal(comparable(result.history), comparable(alone[k].history),
                                      atol=STACKED_TOLERANCE, rtol=0)
        assert result.metrics["best_epoch"] == alone[k].metrics["best_epoch"]
        assert result.metrics["accuracy"] == alone[k].metrics["accuracy"]
        ours, theirs = weights(out / f"fold_{k}"), weights(alone_out / f"fold_{k}")
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=STACKED_TOLERANCE, rtol=0, msg=name)


class Interrupt(Exception):
    pass



# --- micro-batches: a batch in chunks is the same batch ------------------------------------------------------

def padded_batch(rows: int = 6, frames: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, frames + 1, (rows,), generator=g)
    x = torch.randn(rows, frames, 35, generator=g).masked_fill(~lengths_to_mask(lengths, frames).unsqueeze(2), 0)
    return x, lengths


@pytest.mark.parametrize("packed", [False, True])
def test_a_batch_in_chunks_gets_the_masks_it_gets_whole(packed):
    """BatchMasks draws what the whole batch's forward pass draws (bit for bit), and each chunk's
    clips get their rows of it: a clip's output does not depend on how its batch is cut."""
    torch.manual_seed(1)
    model = Sequence1Modal(ModelConfig(encoder_dim=6), packed=packed).train()
    x, lengths = padded_batch()
    whole, _ = model(x, lengths, DropoutNoise(torch.Generator().manual_seed(5), 16))
    masks = BatchMasks(DropoutNoise(torch.Generator().manual_seed(5), 16), model.dropout_sites(), 6, 12, x.device)
    same, _ = model(x, lengths, masks.chunk(0, 6))
    assert torch.equal(same, whole)
    parts = []
    for start, stop in ((0, 4), (4, 6)):
        frames = int(lengths[start:stop].max())  # a chunk is cut to its own longest clip, as training cuts it
        logits, _ = model(x[start:stop, :frames], lengths[start:stop], masks.chunk(start, stop))
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts), whole, atol=1e-6, rtol=0)


def test_chunk_masks_refuse_another_models_sites():
    torch.manual_seed(1)
    model = Sequence1Modal(ModelConfig(encoder_dim=6)).train()
    other = Sequence1Modal(ModelConfig(encoder_dim=6, attention_dropout=0.5)).train()
    x, lengths = padded_batch()
    masks = BatchMasks(DropoutNoise(torch.Generator().manual_seed(5), 12), other.dropout_sites(), 6, 12, x.device)
    with pytest.raises(ValueError, match="dropout_sites"):
        model(x, lengths, masks.chunk(0, 6))


def test_micro_batch_setting():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert fold.micro_batch_size(cfg_of(), cpu) == min(32, fold.AUTO_MICRO_BATCH)
    assert fold.micro_batch_size(cfg_of(), gpu) == 32  # "auto": whole batches on a GPU
    assert fold.micro_batch_size(cfg_of(micro_batch=None), cpu) == 32
    assert fold.micro_batch_size(cfg_of(micro_batch=8), gpu) == 8
    assert fold.micro_batch_size(cfg_of(micro_batch=100), cpu) == 32
    for bad in (0, -3, True, "half"):
        with pytest.raises(ConfigError, match="micro_batch"):
            cfg_of(micro_batch=bad)


def test_micro_batches_change_only_rounding(two_folds, tmp_path):
    """Chunks of 8 clips (4 passes per batch of 32) against whole batches: the same gradients, loss and
    accuracy up to float rounding; and the chunks really are separate passes."""
    manifest, data = two_folds
    calls, first_grads, returned, weights_after = {}, {}, {}, {}
    for chunk in (None, 8):
        cfg = cfg_of(micro_batch=chunk)
        run = fold.FoldRun(cfg, data, 1, split_fold(manifest, 1, cfg), tmp_path / str(chunk), packed=False,
                           device=torch.device("cpu"), resume=False)
        calls[chunk] = 0

        def count(*_, chunk=chunk):
            calls[chunk] += 1
        run.model.register_forward_pre_hook(count)
        step = run.optimizer.step

        def record_then_step(*args, chunk=chunk, step=step, **kwargs):
            first_grads.setdefault(chunk, {n: p.grad.clone() for n, p in run.model.named_parameters()})
            return step(*args, **kwargs)
        run.optimizer.step = record_then_step
        with schedule.torch_settings(cfg):
            returned[chunk] = fold.train_epoch(run.model, run.optimizer, run.tensors, run.split.train, run.weights,
                                               cfg, 11)
        weights_after[chunk] = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    batches = -(-len(run.split.train) // 32)
    assert calls[None] == batches and calls[8] > 3 * batches
    for name, whole in first_grads[None].items():
        torch.testing.assert_close(first_grads[8][name], whole, atol=1e-6, rtol=1e-5, msg=name)
    assert returned[8][0] == pytest.approx(returned[None][0], rel=1e-6)  # weighted mean training loss
    assert returned[8][1] == returned[None][1]                           # training accuracy
    for name, whole in weights_after[None].items():
        torch.testing.assert_close(weights_after[8][name], whole, atol=1e-5, rtol=0, msg=name)


def test_the_stacked_engine_refuses_chunks(two_folds, tmp_path):
    manifest, data = two_folds
    cfg = cfg_of(engine="stacked", micro_batch=8)
    job = fold.FoldJob(1, split_fold(manifest, 1, cfg), tmp_path / "fold_1")
    with pytest.raises(fold.TrainError, match="micro_batch"):
        schedule.run_folds(cfg, data, [job], device=torch.device("cuda"))


def test_a_state_from_before_micro_batch_resumes_with_whole_batches(two_folds, tmp_path):
    """A training state written before the key existed trained whole batches: resuming it with the
    default would mix two computations, so it is refused with the setting that continues it."""
    manifest, data = two_folds
    cfg = cfg_of(micro_batch=None)
    split = split_fold(manifest, 1, cfg)
    fold.FoldRun(cfg, data, 1, split, tmp_path, packed=False, device=torch.device("cpu"), resume=False).run_epoch()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    del state["params"]["micro_batch"]
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(fold.TrainError, match='set "micro_batch": null'):
        fold.FoldRun(cfg_of(), data, 1, split, tmp_path, packed=False, device=torch.device("cpu"))
    resumed = fold.FoldRun(cfg, data, 1, split, tmp_path, packed=False, device=torch.device("cpu"))
    assert resumed.next_epoch == 2

# --- the CPU fast engine: exactly the per-fold computation -------------------------------------------------

def test_fast_engine_gives_exactly_the_folds_trained_one_at_a_time(two_folds, tmp_path):
    """Two workers interleaving the folds' epochs == each fold alone with the masked model, bit for bit
    (so the fast engine is as reproducible run after run as one fold alone)."""
    manifest, data = two_folds
    fast = train.train_cv(cfg_of(num_threads=2), manifest, tmp_path / "fast", data=data, progress=False)
    alone = each_fold_alone(cfg_of(), manifest, data, tmp_path / "alone")
    for k in (1, 2):
        pd.testing.assert_frame_equal(comparable(fast.histories[k]), comparable(alone[k].history))
        ours, theirs = weights(tmp_path / "fast" / f"fold_{k}"), weights(tmp_path / "alone" / f"fold_{k}")
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
        assert fast.table.loc[k, "f1"] == alone[k].metrics["f1"]


def test_fast_engine_matches_the_plain_engine_with_dropout(two_folds, tmp_path):
    """Packed (plain) and masked (fast) models draw the same dropout masks; only rounding differs."""
    manifest, data = two_folds
    plain = train.train_cv(cfg_of(engine="plain"), manifest, tmp_path / "plain", data=data, progress=False)
    fast = train.train_cv(cfg_of(engine="batched", num_threads=2), manifest, tmp_path / "fast", data=data,
                          progress=False)
    for k in (1, 2):
        pd.testing.assert_frame_equal(comparable(fast.histories[k]), comparable(plain.histories[k]),
                                      atol=1e-4, rtol=0)
        predictions = [inference.predict(checkpoints.load_checkpoint(tmp_path / run / f"fold_{k}" / "checkpoint.pt")[0],
                                         data).predicted for run in ("plain", "fast")]
        np.testing.assert_array_equal(predictions[0], predictions[1])


def test_an_error_in_one_fold_stops_the_others(two_folds, tmp_path):
    manifest, data = two_folds

    def fail(k, epoch, row):
        if k == 2 and epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.train_cv(cfg_of(epochs=6, num_threads=2), manifest, tmp_path / "run", data=data, progress=False,
                       on_epoch_end=fail)
    other = torch.load(tmp_path / "run" / "fold_1" / "state.pt", weights_only=True)
    assert len(other["history"]) < 6
    assert not (tmp_path / "run" / "fold_1" / "DONE").exists()


# --- the stacked (GPU) engine, run on the CPU: the per-fold computation up to rounding ----------------------

def test_stacked_engine_matches_each_fold_alone(three_folds, tmp_path):
    """Unequal training sets (a fold sits out steps), normalization, early stopping of some folds."""
    manifest, data = three_folds
    cfg = cfg_of(kfolds=3, epochs=4, patience=1, preprocessor="standard")
    alone = each_fold_alone(cfg, manifest, data, tmp_path / "alone")
    assert min(len(r.history) for r in alone.values()) < 4, "no fold stopped early: the test lost its point"
    assert len({len(split_fold(manifest, k, cfg).train) for k in (1, 2, 3)}) > 1
    results = stacked.train_stacked(fold_runs(cfg, manifest, data, tmp_path / "stacked"))
    assert_close_folds(results, alone, tmp_path / "stacked", tmp_path / "alone")


def test_stacked_engine_resumes_where_it_was_interrupted(two_folds, tmp_path):
    manifest, data = two_folds
    cfg = cfg_of(epochs=3)
    alone = each_fold_alone(cfg, manifest, data, tmp_path / "alone")

    def stop(k, epoch, row):
        if k == 2 and epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        stacked.train_stacked(fold_runs(cfg, manifest, data, tmp_path / "cut"), on_epoch_end=stop)
    runs = fold_runs(cfg, manifest, data, tmp_path / "cut", resume=True)
    assert [len(run.history) for run in runs] == [2, 2]
    assert_close_folds(stacked.train_stacked(runs), alone, tmp_path / "cut", tmp_path / "alone")


@pytest.mark.parametrize("overrides", [{}, {"attention_context": True, "attention_activation": "relu",
                                            "attention_layers": 3, "encoder_layers": 3}])
def test_stacked_model_computes_each_folds_model(overrides):
    cfg = ModelConfig(encoder_dim=6, **overrides)
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(Sequence1Modal(cfg, packed=False))
    stack = stacked.StackedModel(models)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 13, (3, 4), generator=g)
    x = torch.randn(3, 4, 12, 35, generator=g).masked_fill(~lengths_to_mask(lengths.flatten(), 12).view(3, 4, 12, 1), 0)
    rows = [4, 4, 2]  # fold 3 has only two real clips in this step
    for train_mode in (False, True):
        noises = [DropoutNoise(torch.Generator().manual_seed(10 + k), 12) for k in range(3)]
        scales = stacked.stacked_scales(stack.dropout_sites(), noises, rows, 4, 12, x.device) if train_mode else ()
        logits, attention = stack.forward(x, lengths, train=train_mode, scales=scales)
        for k, model in enumerate(models):
            model.train(train_mode)
            noise = DropoutNoise(torch.Generator().manual_seed(10 + k), 12)
            n = rows[k]
            expected, expected_attention = model(x[k, :n], lengths[k, :n], noise)
            torch.testing.assert_close(logits[k, :n], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(attention[k, :n], expected_attention, atol=1e-6, rtol=0)


def test_stacked_adam_steps_each_fold_like_torch_adam():
    """Fold 1 sits the second step out; weight decay on; three steps."""
    torch.manual_seed(0)
    models = [Sequence1Modal(ModelConfig(encoder_dim=4), packed=False) for _ in range(2)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1) for m in models]
    runs = [type("Run", (), {"model": m, "optimizer": o})() for m, o in zip(models, optimizers)]
    stack = stacked.StackedModel(models)
    adam = stacked.StackedAdam(stack.params, runs)
    active = np.array([[True, True], [False, True], [True, True]])
    step_sizes, corrections2 = adam.plan(active, torch.device("cpu"))
    for s in range(3):
        grads = {name: torch.randn_like(p) for name, p in stack.params.items()}
        for name, p in stack.params.items():
            p.grad = grads[name].clone()
        adam.step(torch.from_numpy(active[s]), step_sizes[s], corrections2[s])
        for k, (model, optimizer) in enumerate(zip(models, optimizers)):
            if active[s, k]:
                for name, p in model.named_parameters():
                    p.grad = grads[name][k].clone()
                optimizer.step()
    for k, model in enumerate(models):
        for name, p in model.named_parameters():
            torch.testing.assert_close(stack.params[name][k], p, atol=1e-7, rtol=0, msg=name)
    assert adam.steps.tolist() == [2, 3]


# --- the benchmark's reference mode: the plain engine's computation, the original's costs --------------------

def load_benchmark(path: Path = BENCHMARK, name: str = "aus_benchmark"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_engine_agreement_measures_the_difference_of_two_engines(tiny_synthetic, tmp_path):
    """bench/engine_agreement.py (how the CUDA = CPU tolerance is to be measured), run with two CPU engines:
    masked vs packed agree to float rounding, and it says so; an impossible side is refused by name."""
    agreement = load_benchmark(BENCHMARK.with_name("engine_agreement.py"), "aus_engine_agreement")
    out = tmp_path / "agreement.json"
    table = agreement.main(["--a", "cpu:batched", "--b", "cpu:plain", "--epochs", "1", "--folds", "2",
                            "--aus-dir", str(tiny_synthetic), "--out", str(out)])
    assert list(table.index) == [1, 2, "all"]
    assert 0 < table.loc["all", "max_abs_diff_weight"] < 1e-4  # other arithmetic order: not identical, close
    assert table.loc["all", "same_test_prediction"] == 1.0
    assert table.loc["all", "accuracy_a"] == table.loc["all", "accuracy_b"]
    assert "cpu:batched vs cpu:plain" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        agreement.main(["--b", "cuda:fast"])


def test_reference_mode_computes_exactly_what_the_plain_engine_computes(two_folds, tmp_path):
    manifest, data = two_folds
    bench = load_benchmark()
    cfg = cfg_of(engine="plain")
    reference = bench.reference_cv(cfg, manifest, data, tmp_path / "reference")
    plain = train.train_cv(cfg, manifest, tmp_path / "plain", data=data, progress=False)
    for result in reference:
        k = result.fold
        pd.testing.assert_frame_equal(comparable(result.history), comparable(plain.histories[k]))
        ours, theirs = weights(tmp_path / "reference" / f"fold_{k}"), weights(tmp_path / "plain" / f"fold_{k}")
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
        # The original's whole-model pickle is there too.
        assert isinstance(torch.load(tmp_path / "reference" / f"fold_{k}" / "model.pt", weights_only=False),
                          Sequence1Modal)
    pd.testing.assert_frame_equal(train.cv_table(reference), plain.table)


def test_reference_mode_reads_the_csv_files_on_every_access(two_folds, monkeypatch):
    manifest, data = two_folds
    bench = load_benchmark()
    reads = []
    real_read = bench.openface.read_aus
    monkeypatch.setattr(bench.openface, "read_aus", lambda path, *a, **kw: reads.append(path) or real_read(path))
    clips = bench.CsvClips(list(manifest["path"]), data.labels)
    tensors = bench.CsvTensors(clips, data.lengths, None, torch.device("cpu"))
    x, lengths, y = tensors.batch(np.array([3, 0]))
    tensors.batch(np.array([3]))
    assert reads == [manifest["path"][3], manifest["path"][0], manifest["path"][3]]
    reference = fold.fold_tensors(data, None, torch.device("cpu")).batch(np.array([3, 0]))
    assert torch.equal(x, reference[0]) and torch.equal(lengths, reference[1]) and torch.equal(y, reference[2])
