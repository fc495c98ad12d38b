"""Nothing wrong gets in silently (issue 11): no hidden synthetic data, wrong clips refused,
checkpoints bound to their fold, config and data, paths taken from where the user stands,
params files read strictly, and a full disk or a second training named for what they are."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from aus_lib import checkpoints, dataset, fold, folds, inference, openface, paths, synthetic, train
from aus_lib.cli import main
from aus_lib.config import ConfigError, load_config
from aus_lib.openface import AU_COLUMNS, AUFileError, AUFileWarning

RAW_HEADER = ("frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS)


def raw_text(frames, success=1, face=0) -> str:
    """A raw OpenFace FeatureExtraction file; AU01_r carries the frame number (/ 100) to see the order."""
    rows = [", ".join(RAW_HEADER)]
    for f in frames:
        rows.append(", ".join([str(f), str(face), f"{f / 30:.3f}", "0.98", str(success), f"{f / 100:.2f}"]
                              + ["0.5"] * 16 + ["1"] * 18))
    return "\n".join(rows) + "\n"


@pytest.fixture
def user_aus(tiny_synthetic, tmp_path):
    """A copy of the tiny set as a user's own data folder (no synthetic marker)."""
    aus = tmp_path / "aus"
    shutil.copytree(tiny_synthetic, aus)
    (aus / synthetic.MARKER).unlink()
    return aus


@pytest.fixture
def no_synthetic(tmp_path, monkeypatch):
    """The built-in synthetic folder, redirected so a test sees whether anything generated it."""
    folder = tmp_path / "builtin_synthetic"
    monkeypatch.setattr(paths, "SYNTHETIC_DIR", folder)
    return folder


def train_args(params, *extra):
    return ["train", str(params), "--kfolds", "2", "--epochs", "1", *extra]


def first_clip(aus):
    return sorted(aus.glob("*.csv"))[0]


# --- 1. no silent synthetic data -------------------------------------------------------------------

def test_readme_sequence_trains_on_the_folder_make_folds_read(user_aus, tiny_params, tmp_path, monkeypatch,
                                                              no_synthetic, capsys):
    monkeypatch.setattr(paths, "OUTPUTS", tmp_path / "outputs")
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2"]) == 0
    capsys.readouterr()
    assert main(train_args(tiny_params, "--out-dir", str(tmp_path / "runs"), "--run-name", "r")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"Data: 240 clips of 4 actors from {user_aus}")
    inputs = pd.read_csv(tmp_path / "runs" / "r" / "inputs.csv")
    assert all(p.startswith(str(user_aus)) for p in inputs["path"])
    assert str(user_aus) in json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["data"]
    assert not no_synthetic.exists()


def test_no_data_argument_trains_on_synthetic_data_and_says_so_first(tiny_synthetic, tiny_params, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setattr(paths, "OUTPUTS", tmp_path / "outputs")
    monkeypatch.setattr(synthetic, "ensure_default", lambda seed: tiny_synthetic)  # the full set takes minutes
    assert main(train_args(tiny_params, "--out-dir", str(tmp_path / "runs"), "--run-name", "r")) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("Data: SYNTHETIC")
    assert json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["data"].startswith("SYNTHETIC")


def test_mistyped_folds_dir_is_an_error_not_synthetic_data(tiny_params, tmp_path, no_synthetic, capsys):
    assert main(train_args(tiny_params, "--folds-dir", str(tmp_path / "folsd"), "--out-dir", str(tmp_path / "runs"))) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "folsd") in err and "no fold lists" in err
    assert not (tmp_path / "folsd").exists() and not (tmp_path / "runs").exists() and not no_synthetic.exists()


def test_kfolds_that_do_not_match_the_fold_lists_name_both(user_aus, tiny_params, tmp_path, no_synthetic, capsys):
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 0
    before = sorted(p.name for p in (tmp_path / "f").iterdir())
    capsys.readouterr()
    assert main(["train", str(tiny_params), "--kfolds", "3", "--folds-dir", str(tmp_path / "f"),
                 "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "kfolds=3" in err and "2 folds" in err and str(tmp_path / "f") in err
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == before and not no_synthetic.exists()


def test_aus_dir_other_than_the_data_of_the_fold_lists_is_refused(user_aus, tiny_synthetic, tiny_params, tmp_path,
                                                                  capsys):
    assert main(["make-folds", "--aus-dir", str(tiny_synthetic), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 0
    assert main(train_args(tiny_params, "--folds-dir", str(tmp_path / "f"), "--aus-dir", str(user_aus),
                           "--out-dir", str(tmp_path / "runs"))) == 2
    assert "other data" in capsys.readouterr().err


# --- 2. wrong clips refused --------------------------------------------------------------------

def test_raw_file_without_any_tracked_frame_is_refused(tmp_path):
    path = tmp_path / "01-01-03-01-01-01-01.csv"
    path.write_text(raw_text(range(1, 6), success=0))
    with pytest.raises(AUFileError, match="no frame has success 1"):
        openface.read_aus(path)


def test_raw_frames_are_read_in_frame_order(tmp_path):
    path = tmp_path / "clip.csv"
    path.write_text(raw_text([3, 1, 2, 4]))
    assert openface.read_aus(path)["AU01_r"].tolist() == [0.01, 0.02, 0.03, 0.04]


def test_repeated_frame_of_one_face_is_refused_naming_it(tmp_path):
    path = tmp_path / "clip.csv"
    path.write_text(raw_text([1, 2, 2, 3]))
    with pytest.raises(AUFileError, match=r"frame 2 appears 2 times .*lines 3, 4"):
        openface.read_aus(path)


def test_same_frame_of_two_faces_is_not_a_repeat(tmp_path):
    path = tmp_path / "clip.csv"
    path.write_text(raw_text([1, 2, 3]) + "".join(raw_text([1, 2, 3], face=1).splitlines(True)[1:]))
    with pytest.warns(AUFileWarning, match="2 faces"):
        assert len(openface.read_aus(path)) == 3


def test_frame_gaps_are_reported_in_qc(tmp_path):
    (tmp_path / "clip.csv").write_text(raw_text([1, 2, 5, 6, 9]))
    assert openface.qc_table(tmp_path)["missing_frames"].tolist() == [4]


def test_byte_identical_clips_are_an_error_naming_both(user_aus, tmp_path, capsys):
    original = first_clip(user_aus)
    copy = user_aus / "01-01-03-02-02-02-04.csv"
    copy.unlink()
    shutil.copy(original, copy)
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "byte-identical" in err and original.name in err and copy.name in err
    assert not (tmp_path / "f").exists()


def test_clip_ten_times_longer_than_the_median_warns(user_aus):
    path = first_clip(user_aus)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[1:] * 12) + "\n")
    with pytest.warns(AUFileWarning, match=rf"over 10x the median length.*{path.name}"):
        dataset.build_manifest(user_aus, progress=False)


# --- 3. checkpoints and training states bound to what made them --------------------------------

@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_inference_refuses_a_checkpoint_of_another_fold(run_copy, tmp_path):
    one, two = run_copy / "fold_1" / "checkpoint.pt", run_copy / "fold_2" / "checkpoint.pt"
    one.rename(tmp_path / "swap.pt")
    two.rename(one)
    (tmp_path / "swap.pt").rename(two)
    with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint of fold 2, not fold 1; its test actors are"):
        inference.extract_posteriors(run_copy, "val", out_dir=tmp_path / "post", progress=False)
    assert not (tmp_path / "post").exists()


def test_inference_refuses_a_checkpoint_of_another_config(run_copy, tmp_path):
    path = run_copy / "fold_1" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["params"]["lr"] = 0.1
    torch.save(ckpt, path)
    with pytest.raises(checkpoints.CheckpointError, match=r"config differs .* in lr \(0.1 vs 0.005\)"):
        inference.extract_posteriors(run_copy, "val", out_dir=tmp_path / "post", progress=False)


def test_inference_refuses_a_checkpoint_of_changed_data(run_copy, tiny_synthetic, tmp_path):
    aus = tmp_path / "aus"
    shutil.copytree(tiny_synthetic, aus)
    inputs = pd.read_csv(run_copy / "inputs.csv")
    inputs["path"] = [str(aus / os.path.basename(p)) for p in inputs["path"]]
    inputs.to_csv(run_copy / "inputs.csv", index=False)
    clip = aus / os.path.basename(inputs["path"][0])
    clip.write_text(clip.read_text().replace("0.", "1.", 1))
    with pytest.raises(checkpoints.CheckpointError, match="trained on other data"):
        inference.extract_posteriors(run_copy, "val", out_dir=tmp_path / "post", progress=False)


class Interrupt(Exception):
    pass


def test_resume_refuses_a_state_made_from_other_data(user_aus, tiny_params, tmp_path):
    cfg = load_config(tiny_params, {"kfolds": 2, "epochs": 3})
    manifest = folds.load_or_make(tmp_path / "f", 2, aus_dir=user_aus)

    def stop(k, epoch, row):
        raise Interrupt

    with pytest.raises(Interrupt):
        train.train_cv(cfg, manifest, tmp_path / "run", progress=False, on_epoch_end=stop)
    clip = first_clip(user_aus)
    clip.write_text(clip.read_text().replace("0.", "1.", 1))
    with pytest.raises(fold.TrainError, match=r"Cannot resume .*state.pt: it was made from other data"):
        train.train_cv(cfg, manifest, tmp_path / "run", progress=False)


def test_fold_list_label_that_disagrees_with_the_clip_name_is_an_error(user_aus, tiny_params, tmp_path, capsys):
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 0
    complete = tmp_path / "f" / "complete_dataset_2CV.txt"
    lines = complete.read_text().splitlines()
    fields = lines[0].split("\t")
    fields[1] = "happy" if fields[1] != "happy" else "sad"
    complete.write_text("\n".join(["\t".join(fields)] + lines[1:]) + "\n")
    assert main(train_args(tiny_params, "--folds-dir", str(tmp_path / "f"), "--out-dir", str(tmp_path / "runs"))) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and f"label {fields[1]!r}" in err and fields[3].removesuffix(".csv") in err
    assert not (tmp_path / "runs").exists()


# --- 4. paths are taken from where the user stands -----------------------------------------------

def test_relative_params_path_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    mine = json.loads((paths.PARAMS_DIR / "demo.json").read_text()) | {"name": "mine"}
    (tmp_path / "params" / "demo.json").write_text(json.dumps(mine))
    monkeypatch.chdir(tmp_path)
    assert load_config("params/demo.json").name == "mine"


def test_cli_relative_paths_are_taken_from_the_current_folder(user_aus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["make-folds", "--aus-dir", "aus", "--kfolds", "2", "--out-dir", "my_folds"]) == 0
    assert (tmp_path / "my_folds" / "manifest_2CV.csv").is_file()


# --- 5. params files ----------------------------------------------------------------------------

def write_params(tmp_path, text, name="p.json", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def test_duplicate_key_is_an_error_naming_it_and_its_lines(tiny_params, tmp_path):
    text = tiny_params.read_text().replace('"lr": 0.005,', '"lr": 0.005,\n"lr": 0.5,')
    with pytest.raises(ConfigError, match=r"key 'lr' is given twice \(lines 1, 2\)"):
        load_config(write_params(tmp_path, text))


def test_comments_are_named_as_not_json(tiny_params, tmp_path):
    text = tiny_params.read_text().replace('"lr": 0.005,', '"lr": 0.005,  // the paper\'s "lr"\n')
    with pytest.raises(ConfigError, match=r"p.json, line 1: comments \(// or /\* \*/\) are not JSON"):
        load_config(write_params(tmp_path, text))


def test_utf8_byte_order_mark_is_accepted(tiny_params, tmp_path):
    assert load_config(write_params(tmp_path, tiny_params.read_text(), encoding="utf-8-sig")).name == "tiny"


@pytest.mark.parametrize("name", ["../../elsewhere", "runs/tiny", "..", "a\\b"])
def test_name_with_a_path_is_refused_before_any_folder_is_made(user_aus, tiny_params, tmp_path, capsys, name):
    params = json.loads(tiny_params.read_text()) | {"name": name}
    path = write_params(tmp_path, json.dumps(params))
    assert main(train_args(path, "--aus-dir", str(user_aus), "--folds-dir", str(tmp_path / "f"),
                           "--out-dir", str(tmp_path / "runs"))) == 2
    assert "must be a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "f").exists()


def test_diverging_loss_stops_naming_the_epoch_and_lr(user_aus, tiny_params, tmp_path, capsys):
    path = write_params(tmp_path, json.dumps(json.loads(tiny_params.read_text()) | {"lr": 1e37}))
    assert main(train_args(path, "--aus-dir", str(user_aus), "--folds-dir", str(tmp_path / "f"),
                           "--out-dir", str(tmp_path / "runs"), "--run-name", "r")) == 2
    err = capsys.readouterr().err
    assert "epoch 1: the loss became" in err and "'lr' (now 1e+37)" in err
    assert not (tmp_path / "runs" / "r" / "DONE").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_that_is_not_there_is_refused_before_the_run_folder(user_aus, tiny_params, tmp_path, capsys):
    assert main(train_args(tiny_params, "--aus-dir", str(user_aus), "--folds-dir", str(tmp_path / "f"),
                           "--out-dir", str(tmp_path / "runs"), "--device", "cuda")) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*"))


# --- 6. the machine --------------------------------------------------------------------------

def with_file_size_limit(limit):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG, as a nearly full disk fails them."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def cli(*args, limit=None):
    return subprocess.run([sys.executable, "-m", "aus_lib.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "AUS_CACHE_DIR": os.devnull},
                          preexec_fn=with_file_size_limit(limit) if limit else None)


def test_full_disk_while_writing_a_checkpoint_names_the_folder_and_how_to_resume(user_aus, tiny_params, tmp_path):
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 0
    bigger = json.loads(tiny_params.read_text())
    bigger["model_params"]["encoder"]["dim"] = 32  # a state.pt of ~0.7 MB, over the limit; the tables are not
    params = write_params(tmp_path, json.dumps(bigger))
    done = cli(*train_args(params, "--folds-dir", tmp_path / "f", "--out-dir", tmp_path / "runs", "--run-name", "r"),
               limit=300_000)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "runs" / "r" / "fold_") in done.stderr and "--resume --run-name r" in done.stderr


def test_full_disk_in_make_folds_does_not_advise_resume(user_aus, tmp_path):
    done = cli("make-folds", "--aus-dir", user_aus, "--kfolds", "2", "--out-dir", tmp_path / "f", limit=10_000)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"on the device holding {tmp_path / 'f'}. Free some space" in done.stderr
    assert "resume" not in done.stderr


def test_second_training_into_the_same_run_folder_is_refused(user_aus, tiny_params, tmp_path, capsys):
    assert main(["make-folds", "--aus-dir", str(user_aus), "--kfolds", "2", "--out-dir", str(tmp_path / "f")]) == 0
    args = ["train", tiny_params, "--kfolds", "2", "--epochs", "1000", "--folds-dir", tmp_path / "f",
            "--out-dir", tmp_path / "runs", "--run-name", "r"]
    first = subprocess.Popen([sys.executable, "-m", "aus_lib.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "AUS_CACHE_DIR": str(tmp_path / "cache")})
    try:
        state = tmp_path / "runs" / "r" / "fold_1" / "state.pt"
        deadline = time.time() + 120
        while not state.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first training ended before the test could start the second"
        capsys.readouterr()
        for extra in (["--resume"], ["--overwrite"]):
            assert main([*map(str, args), *extra]) == 2
            assert "Another process is training into" in capsys.readouterr().err
        assert not list((tmp_path / "runs").glob("r.replaced-*"))
    finally:
        first.kill()
        first.wait()
