"""Bad input is refused before any training, with a message that says what, where and how to fix it,
and nothing already on disk changes (issue: runs that survive bad input)."""
import hashlib
import json
import shutil

import pytest

from aus_lib.cli import main
from aus_lib.openface import AU_COLUMNS

GOOD_ROW = ";".join(["0.50"] * 17 + ["1.0"] * 18)
HEADER = ";".join(AU_COLUMNS)


def snapshot(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tiny_synthetic, tiny_run, tmp_path):
    """A data folder (copy of the tiny set), a finished run beside it, and the snapshot of both."""
    aus = tmp_path / "aus"
    shutil.copytree(tiny_synthetic, aus)
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "finished")
    return tmp_path


def train(workspace, params, *extra):
    return main(["train", str(params), "--kfolds", "2", "--aus-dir", str(workspace / "aus"),
                 "--folds-dir", str(workspace / "folds"), "--out-dir", str(workspace / "runs"), *extra])


def refuses(workspace, params, capsys, *needles, extra=()):
    before = snapshot(workspace)
    assert train(workspace, params, *extra) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    assert snapshot(workspace) == before, "a refused run changed files on disk"
    assert not list((workspace / "runs").glob("run-*")), "a run folder was created"
    return err


def clip(workspace, name):
    return workspace / "aus" / name


BAD_FILES = {
    "empty file": (lambda p: p.write_text(""), "empty"),
    "non-numeric value": (lambda p: p.write_text(HEADER + "\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("0.50", "high", 1)
                                                 + "\n"), "high"),
}


# Each reader error has its unit test in test_openface; through the CLI two cases pin that a bad
# file stops the run before anything is written.
@pytest.mark.parametrize("case", ["empty file", "non-numeric value"])
def test_bad_au_file_is_named_before_training(workspace, tiny_params, capsys, case):
    write, needle = BAD_FILES[case]
    name = "01-01-03-01-01-01-01.csv"
    write(clip(workspace, name))
    refuses(workspace, tiny_params, capsys, name, needle)


@pytest.mark.parametrize("name,needle", [("01-01-09-01-01-01-01.csv", "emotion code 09")])  # the rest: test_ravdess
def test_bad_file_names_are_named(workspace, tiny_params, capsys, name, needle):
    shutil.copy(next((workspace / "aus").glob("*.csv")), workspace / "aus" / name)
    refuses(workspace, tiny_params, capsys, name, needle)


def test_out_of_range_values_warn_by_default_and_stop_with_strict(workspace, capsys):
    row = GOOD_ROW.replace("0.50", "7.5", 1)
    clip(workspace, "01-01-03-01-01-01-01.csv").write_text(HEADER + "\n" + (row + "\n") * 3)
    from aus_lib import dataset

    with pytest.warns(UserWarning, match="AU01_r"):
        dataset.build_manifest(workspace / "aus", progress=False)
    assert main(["make-folds", "--aus-dir", str(workspace / "aus"), "--kfolds", "2", "--strict",
                 "--out-dir", str(workspace / "strict")]) == 2
    assert "AU01_r" in capsys.readouterr().err and not (workspace / "strict").exists()


def test_duplicate_clip_names(workspace, capsys):
    sub = workspace / "aus" / "Actor_01"
    sub.mkdir()
    shutil.copy(next((workspace / "aus").glob("*-01.csv")), sub)
    assert main(["make-folds", "--aus-dir", str(workspace / "aus"), "--recursive", "--out-dir", str(workspace / "f")]) == 2
    assert "Duplicate clip" in capsys.readouterr().err


def test_missing_and_empty_folders(workspace, tiny_params, capsys):
    shutil.rmtree(workspace / "aus")
    refuses(workspace, tiny_params, capsys, str(workspace / "aus"), "does not exist")
    (workspace / "aus").mkdir()
    refuses(workspace, tiny_params, capsys, "no .csv files")


def test_fold_lists_pointing_to_missing_files(workspace, tiny_params, capsys):
    assert main(["make-folds", "--aus-dir", str(workspace / "aus"), "--kfolds", "2",
                 "--out-dir", str(workspace / "folds")]) == 0
    next((workspace / "aus").glob("*.csv")).unlink()
    refuses(workspace, tiny_params, capsys, "do not exist", "01_make_folds")


def test_fold_lists_with_an_actor_in_two_test_folds(workspace, tiny_params, capsys):
    assert main(["make-folds", "--aus-dir", str(workspace / "aus"), "--kfolds", "2",
                 "--out-dir", str(workspace / "folds")]) == 0
    complete = workspace / "folds" / "complete_dataset_2CV.txt"
    lines = complete.read_text().splitlines()
    fields = lines[0].split("\t")
    fields[4] = "2" if fields[4] == "1" else "1"
    complete.write_text("\n".join(["\t".join(fields)] + lines[1:]) + "\n")
    refuses(workspace, tiny_params, capsys, "fold")


def test_fold_without_an_emotion_in_training(workspace, tiny_params, capsys):
    for path in (workspace / "aus").glob("01-01-04-*.csv"):  # sad: keep only actor 1's
        if not path.stem.endswith("-01"):
            path.unlink()
    refuses(workspace, tiny_params, capsys, "training part has no clip of ['sad']",
            extra=("--epochs", "1"))


def test_more_folds_than_actors(workspace, tiny_params, capsys):
    before = snapshot(workspace)
    assert main(["train", str(tiny_params), "--kfolds", "5", "--aus-dir", str(workspace / "aus"),
                 "--folds-dir", str(workspace / "folds5"), "--out-dir", str(workspace / "runs")]) == 2
    assert "only 4 actor" in capsys.readouterr().err
    assert snapshot(workspace) == before


def _params(tmp_path, mutate):
    from conftest import TINY_PARAMS

    params = json.loads(json.dumps(TINY_PARAMS))
    mutate(params)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(params, indent=2))
    return path


# Every kind of bad value has its unit test in test_config; through the CLI one pins the exit code,
# the message naming key and file, and that nothing on disk changes.
@pytest.mark.parametrize("mutate,needles", [
    (lambda p: p["model_params"]["encoder"].update(dim=0), ["model_params.encoder.dim=0", "bad.json"]),
])
def test_bad_params_are_named(workspace, capsys, mutate, needles):
    path = _params(workspace, mutate)
    before = snapshot(workspace)
    assert main(["train", str(path), "--aus-dir", str(workspace / "aus"), "--folds-dir", str(workspace / "folds"),
                 "--out-dir", str(workspace / "runs")]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    assert snapshot(workspace) == before


def test_resuming_a_run_of_another_config_is_refused(workspace, tiny_params, capsys):
    finished = workspace / "runs" / "finished"
    before = snapshot(finished)
    assert main(["train", str(tiny_params), "--kfolds", "2", "--aus-dir", str(workspace / "aus"),
                 "--folds-dir", str(workspace / "folds"), "--out-dir", str(workspace / "runs"),
                 "--run-name", "finished", "--resume", "--epochs", "5"]) == 2
    assert "Cannot resume" in capsys.readouterr().err
    assert snapshot(finished) == before


def test_finished_run_is_not_overwritten_without_consent(workspace, tiny_params, capsys):
    before = snapshot(workspace / "runs")
    assert main(["train", str(tiny_params), "--kfolds", "2", "--aus-dir", str(workspace / "aus"),
                 "--folds-dir", str(workspace / "folds"), "--out-dir", str(workspace / "runs"),
                 "--run-name", "finished"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert snapshot(workspace / "runs") == before
