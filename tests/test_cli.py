"""The aus-emotion command line on a tiny synthetic set, as users of the original workflow call it."""
import json
import subprocess
import sys

import pytest

from aus_lib.cli import build_parser, main


def test_help_of_each_command(capsys):
    for command in ("make-folds", "train", "inference", "analyse"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage: aus-emotion " + command in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "aus_lib.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "make-folds" in out.stdout


def test_make_folds_train_inference_analyse(tiny_synthetic, tiny_params, tmp_path, capsys):
    folds_dir = tmp_path / "folds"
    assert main(["make-folds", "--aus-dir", str(tiny_synthetic), "--kfolds", "2", "--out-dir", str(folds_dir)]) == 0
    assert (folds_dir / "complete_dataset_2CV.txt").is_file()
    assert main(["train", str(tiny_params), "--kfolds", "2", "--folds-dir", str(folds_dir), "--out-dir",
                 str(tmp_path / "runs"), "--run-name", "cli", "--epochs", "1"]) == 0
    assert "FINAL CROSS VALIDATION RESULTS" in capsys.readouterr().out
    run = tmp_path / "runs" / "cli"
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
    from aus_lib.paths import PARAMS_DIR

    assert main(["inference", str(PARAMS_DIR / "RAVDESS_AUs_posteriors.json"), "--kfolds", "2",
                 "--pretrained", str(run)]) == 0
    assert (run / "posteriors" / "tiny-val--fold_1_outof_2.csv").is_file()
    assert main(["analyse", str(run)]) == 0
    assert "Pooled accuracy" in capsys.readouterr().out


def test_errors_exit_non_zero_with_the_reason(tmp_path, capsys):
    assert main(["make-folds", "--aus-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(tmp_path / "missing") in err
    assert not (tmp_path / "f").exists()


def test_parser_matches_the_original_workflow():
    args = build_parser().parse_args(["train", "params/RAVDESS_AUs.json", "--kfolds", "5"])
    assert args.kfolds == 5 and args.params == "params/RAVDESS_AUs.json"
    args = build_parser().parse_args(["inference", "p.json", "--kfolds", "5", "--pretrained", "outputs/runs/x"])
    assert args.pretrained == "outputs/runs/x"
