"""Posterior files: the original sequenceLearning four-file format, written and read back."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from aus_lib.posteriors import (
    PosteriorFileError,
    find_posterior_files,
    posterior_file_name,
    read_posteriors,
    read_run,
    side_file_path,
    to_long_table,
    write_posteriors,
)
from aus_lib.ravdess import LABELS, make_name

TAGS = ["01-01-03-02-01-01-12.csv", "01-01-05-01-02-02-12.csv", "01-01-01-01-01-01-12.csv"]


def _write_fold(folder, k, K, partition="val", name="RAVDESS_AUs", desc="", seed=0, n=3):
    rng = np.random.default_rng(seed + k)
    tags = [make_name(LABELS[i % 8], 1, 1 + (i // 8) % 2, 1, actor=k) + ".csv" for i in range(n)]
    logits = rng.normal(size=(n, 8)).astype(np.float32)
    y = [LABELS[i % 8] for i in range(n)]
    y_hat = [LABELS[int(np.argmax(row))] for row in logits]
    att = [rng.random(5 + i).astype(np.float32) for i in range(n)]
    return write_posteriors(folder, name, partition, k, K, tags, y, y_hat, logits, att, desc=desc)


def test_file_name_is_the_original_pattern():
    assert posterior_file_name("RAVDESS_AUs", "val", 1, 5) == "RAVDESS_AUs-val--fold_1_outof_5.csv"
    assert posterior_file_name("X", "train", 3, 5, desc="bs64") == "X-train-bs64-fold_3_outof_5.csv"


def test_four_file_round_trip_keeps_float32_bits(tmp_path):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(3, 8)) * 5).astype(np.float32)
    att = [rng.dirichlet(np.ones(t)).astype(np.float32) for t in (109, 88, 157)]
    paths = write_posteriors(tmp_path, "RAVDESS_AUs", "val", 2, 5, TAGS, ["happy", "angry", "neutral"],
                             ["happy", 6, "neutral"], logits, att)
    assert [p.name for p in paths] == [
        "RAVDESS_AUs-val--fold_2_outof_5.csv",
        "RAVDESS_AUs-val--fold_2_outof_5-predictions.csv",
        "RAVDESS_AUs-val--fold_2_outof_5-posteriors.csv",
        "RAVDESS_AUs-val--fold_2_outof_5-featAttention.csv",
    ]
    df = read_posteriors(paths[0])
    assert list(df["tag"]) == TAGS
    assert list(df["clip"]) == [t[:-4] for t in TAGS]
    assert list(df["y_hat"]) == ["happy", "sad", "neutral"]
    for i in range(3):
        assert np.array_equal(df["posteriors"][i].astype(np.float32), logits[i])
        assert np.array_equal(df["attentions"][i].astype(np.float32), att[i])
    with open(paths[1], newline="") as f:
        assert list(csv.reader(f)) == [[TAGS[0], "happy"], [TAGS[1], "sad"], [TAGS[2], "neutral"]]
    with open(paths[2], newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == TAGS
    assert np.array_equal(np.array(eval(rows[1][1]), dtype=np.float32), logits[1])
    with open(paths[3], newline="") as f:
        rows = list(csv.reader(f))
    assert len(eval(rows[2][1])) == 157


def test_main_file_layout_and_quoted_side_files(tmp_path):
    paths = write_posteriors(tmp_path, "R", "val", 1, 2, ["a/b/01-01-03-02-01-01-12"], ["happy"], ["happy"],
                             np.arange(8, dtype=np.float32)[None], [np.array([0.25, 0.75], dtype=np.float32)])
    lines = paths[0].read_text().splitlines()
    assert lines[0] == "tag\ty\ty_hat\tposteriors\tattentions"
    assert lines[1] == "01-01-03-02-01-01-12.csv\thappy\thappy\t[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]\t[0.25, 0.75]"
    assert paths[3].read_text() == '01-01-03-02-01-01-12.csv,"[0.25, 0.75]"\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


# The first lines of an original file (RAVDESS_AUs-val--fold_1_outof_5.csv), shortened: attentions are
# padded with zeros to the longest clip of the batch.
ORIGINAL = (
    "tag\ty\ty_hat\tposteriors\tattentions\n"
    "01-01-08-02-02-02-05.csv\tsurprise\tsurprise\t[-1.6791658401489258, -0.1680036336183548, -2.487339735031128, "
    "2.2702136039733887, 0.3804650604724884, -3.375244140625, -0.3819233775138855, 6.968912601470947]\t"
    "[0.3302, 0.3349, 0.3349, 0.0, 0.0]\n"
    "01-01-02-02-01-02-05.csv\tcalm\tsurprise\t[-2.877393960952759, 1.8050084114074707, -2.1269376277923584, "
    "1.9287378787994385, 1.190551519393921, -3.6654844284057617, 0.16249310970306396, 3.494328737258911]\t"
    "[0.2, 0.2, 0.2, 0.2, 0.2]\n"
)


def test_reads_a_file_in_the_original_format(tmp_path):
    path = tmp_path / "RAVDESS_AUs-val--fold_1_outof_5.csv"
    path.write_text(ORIGINAL)
    df = read_posteriors(path)
    assert list(df["y"]) == ["surprise", "calm"]
    assert list(df["y_hat"]) == ["surprise", "surprise"]
    assert df["posteriors"][0][7] == 6.968912601470947
    assert LABELS[int(np.argmax(df["posteriors"][1]))] == "surprise"
    assert list(df["attentions"][0]) == [0.3302, 0.3349, 0.3349]  # padding stripped
    assert len(df["attentions"][1]) == 5


def test_padding_is_kept_on_request(tmp_path):
    path = tmp_path / "RAVDESS_AUs-val--fold_1_outof_5.csv"
    path.write_text(ORIGINAL)
    assert list(read_posteriors(path, strip_padding=False)["attentions"][0]) == [0.3302, 0.3349, 0.3349, 0.0, 0.0]


def test_reads_numpy_style_lists(tmp_path):
    path = tmp_path / "x-val--fold_1_outof_1.csv"
    path.write_text("tag\ty\ty_hat\tposteriors\tattentions\n"
                    "01-01-03-02-01-01-12.csv\thappy\thappy\t[0. 1. 2. 3.  4. 5. 6. 7.]\t[ 0.5  0.5]\n")
    df = read_posteriors(path)
    assert list(df["posteriors"][0]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert list(df["attentions"][0]) == [0.5, 0.5]


def test_tensor_repr_error_names_file_and_line(tmp_path):
    path = tmp_path / "x-val--fold_1_outof_1.csv"
    path.write_text("tag\ty\ty_hat\tposteriors\tattentions\n"
                    "01-01-03-02-01-01-12.csv\thappy\thappy\ttensor([0., 1.])\t[0.5]\n")
    with pytest.raises(PosteriorFileError, match=r"x-val--fold_1_outof_1\.csv, line 2.*tolist"):
        read_posteriors(path)


def test_unknown_emotion_error_names_the_column(tmp_path):
    path = tmp_path / "x-val--fold_1_outof_1.csv"
    path.write_text("tag\ty\ty_hat\tposteriors\tattentions\n"
                    "01-01-03-02-01-01-12.csv\tHappy\thappy\t[0, 1, 2, 3, 4, 5, 6, 7]\t[1.0]\n")
    with pytest.raises(PosteriorFileError, match="line 2: column y = 'Happy'"):
        read_posteriors(path)


def test_wrong_number_of_logits_is_an_error(tmp_path):
    path = tmp_path / "x-val--fold_1_outof_1.csv"
    path.write_text("tag\ty\ty_hat\tposteriors\tattentions\n"
                    "01-01-03-02-01-01-12.csv\thappy\thappy\t[0, 1, 2]\t[1.0]\n")
    with pytest.raises(PosteriorFileError, match="3 values; expected 8"):
        read_posteriors(path)


def test_side_file_given_as_main_file_is_explained(tmp_path):
    paths = _write_fold(tmp_path, 1, 1)
    with pytest.raises(PosteriorFileError, match="side file; pass the main file"):
        read_posteriors(paths[2])


def test_write_rejects_wrong_logit_shape(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(1, 8\)"):
        write_posteriors(tmp_path, "R", "val", 1, 1, TAGS[:1], ["happy"], ["happy"], np.zeros((1, 7)), [np.ones(2)])


def test_write_rejects_nan_attention(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_posteriors(tmp_path, "R", "val", 1, 1, TAGS[:1], ["happy"], ["happy"], np.zeros((1, 8)),
                         [np.array([0.5, np.nan])])


def test_find_infers_K_and_ignores_other_files(tmp_path):
    for k in (1, 2, 3):
        _write_fold(tmp_path, k, 3)
        _write_fold(tmp_path, k, 3, partition="train")
    found = find_posterior_files(tmp_path, "val")
    assert sorted(found) == [1, 2, 3]
    assert found[2].name == "RAVDESS_AUs-val--fold_2_outof_3.csv"
    assert find_posterior_files(tmp_path, "train")[1].name == "RAVDESS_AUs-train--fold_1_outof_3.csv"


def test_find_reports_missing_folds(tmp_path):
    for k in (1, 3):
        _write_fold(tmp_path, k, 4)
    with pytest.raises(PosteriorFileError, match=r"fold\(s\) \[2, 4\] out of 4 are missing"):
        find_posterior_files(tmp_path)


def test_find_rejects_mixed_K(tmp_path):
    _write_fold(tmp_path, 1, 2)
    _write_fold(tmp_path, 2, 2)
    _write_fold(tmp_path, 1, 5)
    with pytest.raises(PosteriorFileError, match="different K"):
        find_posterior_files(tmp_path)


def test_find_rejects_two_runs_in_one_folder(tmp_path):
    _write_fold(tmp_path, 1, 1)
    _write_fold(tmp_path, 1, 1, desc="other")
    with pytest.raises(PosteriorFileError, match="2 'val' files for fold 1"):
        find_posterior_files(tmp_path)


def test_find_without_files_lists_the_folder(tmp_path):
    (tmp_path / "notes.csv").write_text("x\n")
    with pytest.raises(PosteriorFileError, match="no 'val' posterior files.*notes.csv"):
        find_posterior_files(tmp_path)


def test_long_table_has_softmax_probabilities(tmp_path):
    for k in (1, 2):
        _write_fold(tmp_path, k, 2, n=4)
    long = to_long_table(read_run(tmp_path))
    assert list(long.columns[:5]) == ["clip", "fold", "partition", "label", "prediction"]
    assert list(long.columns[5:]) == [f"p_{e}" for e in LABELS]
    assert list(long["fold"]) == [1] * 4 + [2] * 4
    assert set(long["partition"]) == {"val"}
    probs = long[[f"p_{e}" for e in LABELS]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    # the stored y_hat is the argmax of the logits, so of the probabilities too
    assert list(long["prediction"]) == [LABELS[i] for i in probs.argmax(axis=1)]


def test_long_table_of_one_fold_needs_the_fold(tmp_path):
    df = read_posteriors(_write_fold(tmp_path, 1, 1)[0])
    with pytest.raises(ValueError, match="fold is required"):
        to_long_table(df)
    assert set(to_long_table(df, 1, "train")["partition"]) == {"train"}


def test_side_file_path_names():
    assert side_file_path("d/R-val--fold_1_outof_5.csv", "featAttention").name == "R-val--fold_1_outof_5-featAttention.csv"
