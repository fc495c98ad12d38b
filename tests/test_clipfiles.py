"""Clip discovery: the RAVDESS authors' OpenFace zip, any folder layout, vocal channels, py-feat files."""
import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from aus_lib import checkpoints, dataset, openface
from aus_lib.clipfiles import find_clips
from aus_lib.paths import SHARED_DATA

REAL_RAW = SHARED_DATA / "openface" / "openface22_video_featureextraction.csv"
PYFEAT_SAMPLE = SHARED_DATA / "pyfeat" / "pyfeat_detector_output_one_frame.csv"


def _needs(path):
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


# Speech clips of actors 1 and 2 (neutral, happy; two repetitions), song clips of both, one audio-only trial.
SPEECH = [f"01-01-{emo:02d}-01-01-{rep:02d}-{actor:02d}" for actor in (1, 2) for emo in (1, 3) for rep in (1, 2)]
SONG = [f"01-02-{emo:02d}-01-01-01-{actor:02d}" for actor in (1, 2) for emo in (1, 3)]
AUDIO_ONLY = ["03-01-03-01-01-01-01"]


def _retimed(lines: list[bytes], i: int) -> list[bytes]:
    """The real rows with the first frame's timestamp moved by i ms: no two clips byte-identical
    (which is refused as a misnamed copy), every AU value as recorded."""
    fields = lines[1].split(b",")
    fields[2] = b" %.3f" % (float(fields[2]) + i / 1000)
    return [lines[0], b",".join(fields), *lines[2:]]


@pytest.fixture
def tracking_zip(tmp_path):
    """A zip laid out like FacialTracking_Actors_01-24.zip, built from real OpenFace FeatureExtraction
    output; one member spelled .CSV, plus the macOS metadata a zip made on a Mac carries."""
    lines = _needs(REAL_RAW).read_bytes().splitlines(keepends=True)
    path = tmp_path / "FacialTracking_Actors_01-24.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i, stem in enumerate(SPEECH + SONG + AUDIO_ONLY):
            suffix = ".CSV" if stem == SPEECH[0] else ".csv"
            z.writestr(f"FacialTracking_Actors_01-24/Actor_{stem[-2:]}/{stem}{suffix}", b"".join(_retimed(lines, i)))
        z.writestr(f"__MACOSX/FacialTracking_Actors_01-24/Actor_01/._{SPEECH[1]}.csv", b"\x00\x05\x16\x07")
        z.writestr("FacialTracking_Actors_01-24/README.txt", "tracking of every trial")
    return path


def test_the_zip_is_read_directly_speech_only_by_default(tracking_zip, capsys):
    before = tracking_zip.read_bytes()
    manifest = dataset.build_manifest(tracking_zip, progress=False)
    assert sorted(manifest["clip"]) == sorted(SPEECH)
    assert (manifest["vocal_channel"] == 1).all() and (manifest["frames"] == 158).all()
    printed = capsys.readouterr().out
    assert "8 AU file(s) used" in printed and "4 song clip(s) skipped" in printed
    assert "1 audio-only (modality 03) file(s) skipped" in printed
    assert tracking_zip.read_bytes() == before


def test_vocal_selects_song_or_both(tracking_zip):
    assert sorted(dataset.build_manifest(tracking_zip, vocal="song", progress=False)["clip"]) == sorted(SONG)
    both = dataset.build_manifest(tracking_zip, vocal="both", progress=False)
    assert sorted(both["clip"]) == sorted(SPEECH + SONG)
    with pytest.raises(ValueError, match="vocal='sung' is not one of"):
        find_clips(tracking_zip, vocal="sung")


def test_an_extracted_folder_in_any_layout_and_letter_case(tracking_zip, tmp_path):
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(tracking_zip) as z:
        z.extractall(folder)
    found = find_clips(folder)
    assert sorted(p.name for p in found.files) == sorted(f"{s}.CSV" if s == SPEECH[0] else f"{s}.csv" for s in SPEECH)
    assert found.skipped["song clip(s)"] == 4
    with pytest.raises(dataset.DataError, match="no .csv files"):
        find_clips(folder, recursive=False)


def test_qc_reports_frames_lost_per_clip(tracking_zip):
    manifest = dataset.build_manifest(tracking_zip, progress=False)
    qc = openface.qc_table(list(manifest["path"]))
    lost = int((pd.read_csv(REAL_RAW, skipinitialspace=True)["success"] == 0).sum())
    assert (qc["failed_frames"] == lost).all() and (qc["frames"] == 158).all()


def test_full_av_and_video_only_copies_of_one_recording_are_refused(tmp_path):
    raw = _needs(REAL_RAW)
    for stem in ("01-01-03-01-01-01-01", "02-01-03-01-01-01-01"):
        shutil.copy(raw, tmp_path / f"{stem}.csv")
    with pytest.raises(dataset.DataError, match="same recording"):
        dataset.build_manifest(tmp_path, progress=False)


def test_only_song_clips_with_speech_asked_says_what_to_do(tracking_zip, tmp_path):
    with zipfile.ZipFile(tracking_zip) as z:
        z.extractall(tmp_path / "x")
    song_only = tmp_path / "song_only"
    song_only.mkdir()
    for p in (tmp_path / "x").rglob("01-02-*.csv"):
        shutil.copy(p, song_only)
    with pytest.raises(dataset.DataError, match="No speech clips.*4 song clip"):
        dataset.build_manifest(song_only, progress=False)


# --- py-feat -------------------------------------------------------------------------------------

def _pyfeat_clip(path, values: np.ndarray, lost_frame: int | None = None):
    """A py-feat Detector CSV (the real sample's columns) with the given AU probabilities per frame."""
    sample = pd.read_csv(_needs(PYFEAT_SAMPLE))
    frames = pd.concat([sample] * len(values), ignore_index=True)
    frames["frame"] = range(len(values))
    frames[list(openface.PYFEAT_AU_COLUMNS)] = values
    if lost_frame is not None:
        frames.loc[lost_frame, list(openface.PYFEAT_AU_COLUMNS)] = np.nan
    frames.to_csv(path, index=False)


def test_a_pyfeat_file_reads_as_its_20_au_probabilities(tmp_path):
    path = tmp_path / "01-01-03-01-01-01-01.csv"
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (5, 20))
    _pyfeat_clip(path, values, lost_frame=2)
    aus = openface.read_aus(path)
    assert list(aus.columns) == list(openface.PYFEAT_AU_COLUMNS)
    np.testing.assert_allclose(aus.drop(index=2).to_numpy(), np.delete(values, 2, axis=0))
    assert (aus.loc[2] == 0).all()  # a frame without a face, as OpenFace writes lost frames
    assert openface.qc_table([path])["failed_frames"].item() == 1


def test_mixing_pyfeat_and_openface_files_is_refused(tmp_path):
    _pyfeat_clip(tmp_path / "01-01-03-01-01-01-01.csv", np.full((3, 20), 0.5))
    shutil.copy(_needs(REAL_RAW), tmp_path / "01-01-04-01-01-01-01.csv")
    with pytest.raises(dataset.DataError, match="different AU formats are mixed"):
        dataset.build_manifest(tmp_path, progress=False)


def test_training_on_pyfeat_data_sizes_the_model_to_20_inputs(tiny_synthetic, tiny_params, tmp_path):
    from aus_lib import inference, train
    from aus_lib.config import load_config

    folder = tmp_path / "pyfeat"
    folder.mkdir()
    for src in sorted(tiny_synthetic.glob("*-0[12].csv")):  # actors 1 and 2
        intensities = openface.read_aus(src).to_numpy()[:, :17] / 5.0
        _pyfeat_clip(folder / src.name, np.concatenate([intensities, intensities[:, :3]], axis=1))
    manifest = dataset.build_manifest(folder, progress=False)
    assert (manifest["au_format"] == "pyfeat").all()
    cfg = load_config(tiny_params, {"kfolds": 2, "epochs": 1})
    assert cfg.input_size == 35
    result = train.train_cv(cfg, manifest, tmp_path / "run", folds={1: [1], 2: [2]}, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["input_size"] == 20
    model, _ = checkpoints.load_checkpoint(tmp_path / "run" / "fold_1" / "checkpoint.pt")
    assert model.cfg.input_size == 20
    long = inference.extract_posteriors(result.run_dir, "val", progress=False)
    assert len(long) == len(manifest)
    # 04's analysis works on the 20 py-feat AUs too: baselines, attention figures, AU importance.
    from aus_lib import report

    post = report.load_posteriors(result.run_dir, None, "val")
    data = dataset.load_clips(post.manifest, progress=False)
    svc = {"SVC": ("svc", 1.0, "minmax")}
    assert len(report.static_baselines(post.manifest, data, svc, minirocket=False)) == 2  # without, with actor norm
    figures = report.attention_figures(post, data)
    importance = pd.read_csv(tmp_path / "run" / "fold_1" / "attention_au_importance.csv", index_col=0)
    assert list(importance.columns) == list(openface.PYFEAT_AU_COLUMNS) and figures


def test_qc_summary_of_processed_files_has_no_empty_rows(tiny_synthetic):
    summary = openface.qc_summary(openface.qc_table(sorted(tiny_synthetic.glob("*-01.csv"))))
    assert list(summary.index) == ["frames"]
    assert not summary.isna().all(axis=1).any()


def test_cli_make_folds_takes_the_zip_and_vocal(tracking_zip, tmp_path, capsys):
    from aus_lib.cli import main

    assert main(["make-folds", "--aus-dir", str(tracking_zip), "--vocal", "both", "--kfolds", "2",
                 "--out-dir", str(tmp_path / "folds")]) == 0
    manifest = pd.read_csv(tmp_path / "folds" / "manifest_2CV.csv")
    assert sorted(manifest["clip"]) == sorted(SPEECH + SONG)
    assert "1 audio-only (modality 03) file(s) skipped" in capsys.readouterr().out


def test_zip_members_are_extracted_only_below_the_cache_folder(tmp_path):
    """A member named with an absolute path, a drive or '..' (a crafted or odd zip) lands inside the folder."""
    from aus_lib import clipfiles

    path = tmp_path / "odd.zip"
    names = ["/abs/01-01-01-01-01-01-01.csv", "../up/01-01-01-01-01-02-01.csv", "C:\\win\\01-01-01-01-01-03-01.csv"]
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            info = zipfile.ZipInfo("placeholder.csv")
            info.filename = name  # as stored by a tool that does not clean names
            z.writestr(info, b"frame\n1\n")
    folder = tmp_path / "cache" / "inside"
    with zipfile.ZipFile(path) as z:
        targets = clipfiles._extract(z, z.infolist(), folder)
    assert len(targets) == 3
    for target in targets:
        assert target.resolve().is_relative_to(folder.resolve()) and target.read_bytes() == b"frame\n1\n"
    assert not (tmp_path / "up").exists()
