import os

import pytest

from aus_lib import runs


def test_atomic_write_leaves_no_temp_file(tmp_path):
    runs.atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_new_run_dir_then_refusal_without_resume(tmp_path):
    run = runs.prepare_run_dir(tmp_path, "r1", {"seed": 1})
    (run / "fold_1").mkdir()
    with pytest.raises(runs.RunExistsError, match="r1"):
        runs.prepare_run_dir(tmp_path, "r1", {"seed": 1})


def test_resume_requires_the_same_config(tmp_path):
    runs.prepare_run_dir(tmp_path, "r1", {"seed": 1, "lr": 0.1})
    assert runs.prepare_run_dir(tmp_path, "r1", {"seed": 1, "lr": 0.1}, resume=True).name == "r1"
    with pytest.raises(runs.RunExistsError, match="differs in lr"):
        runs.prepare_run_dir(tmp_path, "r1", {"seed": 1, "lr": 0.2}, resume=True)


def test_overwrite_moves_the_old_run_aside(tmp_path):
    run = runs.prepare_run_dir(tmp_path, "r1", {"seed": 1})
    (run / "cv_results.csv").write_text("precious")
    runs.mark_done(run)
    runs.prepare_run_dir(tmp_path, "r1", {"seed": 2}, overwrite=True)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("r1.replaced-")]
    assert len(kept) == 1 and (kept[0] / "cv_results.csv").read_text() == "precious"


def test_latest_pointer(tmp_path):
    run = runs.prepare_run_dir(tmp_path, runs.default_run_name(), {})
    runs.set_latest(tmp_path, run)
    assert runs.latest_run(tmp_path) == run


def test_default_run_names_are_unique():
    assert runs.default_run_name() != runs.default_run_name()


def test_unwritable_out_dir_is_named(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(runs.OutputDirError, match="locked.*permission denied"):
        runs.check_writable(tmp_path / "locked")


def test_full_disk_is_explained_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "checkpoint.pt"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(runs.OutputDirError, match="No space left.*Free some space"):
        runs.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_resume_removes_temporaries_of_a_killed_process(tmp_path):
    run = runs.prepare_run_dir(tmp_path, "r1", {"seed": 1})
    (run / "fold_1").mkdir()
    (run / "fold_1" / ".state.abc.pt.tmp.pt").write_bytes(b"half")
    (run / "fold_1" / "state.pt").write_bytes(b"whole")
    runs.prepare_run_dir(tmp_path, "r1", {"seed": 1}, resume=True)
    assert sorted(p.name for p in (run / "fold_1").iterdir()) == ["state.pt"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    path = runs.atomic_write_text(tmp_path / "a.txt", "x")
    reference = tmp_path / "b.txt"
    reference.write_text("x")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_run_find_follows_the_latest_pointer_of_a_folder_of_runs(tmp_path):
    (tmp_path / "r1").mkdir()
    runs.atomic_write_json(runs.Run(tmp_path / "r1").config_file, {})
    runs.set_latest(tmp_path, tmp_path / "r1")
    assert runs.Run.find(tmp_path) == runs.Run.find(tmp_path / "r1") == runs.Run(tmp_path / "r1")
    assert runs.Run(tmp_path / "r1").checkpoint(2) == tmp_path / "r1" / "fold_2" / "checkpoint.pt"


def test_run_read_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing: .* is not a finished 02_train_cv run"):
        runs.Run(tmp_path).read()
