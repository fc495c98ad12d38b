"""Tests for aus_lib.openface: reading, checking, writing and converting OpenFace AU files."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aus_lib.openface import (
    AU_COLUMNS, AU_INTENSITY, AU_PRESENCE, PROCESSED_SEP, AUFileError, AUFileWarning,
    convert_folder, qc_table, read_aus, read_openface_raw, write_aus,
)
from aus_lib.paths import SHARED_DATA

OPENFACE = SHARED_DATA / "openface"
RAVDESS = SHARED_DATA / "ravdess_real"
VIDEO = "openface22_video_featureextraction.csv"
TWO_FACES = "openface22_vidmulti_two_faces.csv"
IMAGE = "openface22_image_facelandmarkimg.csv"
NO_AUS = "openface_image_landmarks_only_no_aus.csv"


def real(folder: Path, name: str = "") -> Path:
    path = folder / name
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def processed_text(rows: list[list[object]], columns=AU_COLUMNS) -> str:
    lines = [PROCESSED_SEP.join(columns)] + [PROCESSED_SEP.join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def valid_row(intensity: float = 1.5, presence: int = 1) -> list[object]:
    return [intensity] * len(AU_INTENSITY) + [presence] * len(AU_PRESENCE)


def write_text(tmp_path: Path, text: str, name: str = "clip.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- real OpenFace files -------------------------------------------------------------------------

def test_video_file_reads_all_158_frames_as_35_float_columns():
    aus = read_aus(real(OPENFACE, VIDEO))
    assert list(aus.columns) == list(AU_COLUMNS)
    assert len(aus) == 158
    assert all(dtype == np.float64 for dtype in aus.dtypes)
    assert isinstance(aus.index, pd.RangeIndex) and aus.index[0] == 0


def test_video_file_values_match_the_raw_au_columns():
    path = real(OPENFACE, VIDEO)
    raw = read_openface_raw(path)
    np.testing.assert_array_equal(read_aus(path).to_numpy(), raw[list(AU_COLUMNS)].to_numpy(dtype=float))


def test_raw_table_has_every_column_with_stripped_names():
    raw = read_openface_raw(real(OPENFACE, VIDEO))
    assert raw.shape == (158, 714)
    assert list(raw.columns[:5]) == ["frame", "face_id", "timestamp", "confidence", "success"]
    assert not any(c != c.strip() for c in raw.columns)
    assert all(pd.api.types.is_numeric_dtype(raw[c]) for c in raw.columns)
    assert raw["pose_Rx"].notna().all()


def test_two_faces_keeps_the_most_confident_face_with_a_warning():
    path = real(OPENFACE, TWO_FACES)
    with pytest.warns(AUFileWarning, match=r"kept face_id 0 .*dropped 74 rows"):
        aus = read_aus(path)
    raw = read_openface_raw(path)
    face0 = raw[raw["face_id"] == 0]
    assert len(aus) == len(face0) == 155
    np.testing.assert_array_equal(aus.to_numpy(), face0[list(AU_COLUMNS)].to_numpy(dtype=float))


def test_image_file_reads_one_row_when_single_images_are_allowed():
    aus = read_aus(real(OPENFACE, IMAGE), min_frames=1)
    assert aus.shape == (1, 35)
    assert list(aus.columns) == list(AU_COLUMNS)


def test_image_file_is_too_short_for_a_clip_by_default():
    with pytest.raises(AUFileError, match=r"1 frame\(s\), fewer than min_frames=2"):
        read_aus(real(OPENFACE, IMAGE))


def test_landmarks_only_file_fails_naming_the_missing_aus():
    with pytest.raises(AUFileError) as err:
        read_aus(real(OPENFACE, NO_AUS))
    message = str(err.value)
    assert NO_AUS in message and "35 AU column(s)" in message
    assert all(col in message for col in AU_COLUMNS)


def test_raw_reader_rejects_processed_files():
    clip = sorted(real(RAVDESS).glob("*.csv"))[0]
    with pytest.raises(AUFileError, match="processed ';' AU format"):
        read_openface_raw(clip)


def test_every_real_ravdess_clip_reads_with_35_columns_and_at_least_88_frames():
    clips = sorted(real(RAVDESS).glob("*.csv"))
    assert len(clips) == 120
    problems = []
    for clip in clips:
        aus = read_aus(clip)
        if list(aus.columns) != list(AU_COLUMNS) or len(aus) < 88:
            problems.append(f"{clip.name}: {aus.shape}")
    assert problems == []


# --- processed writer ----------------------------------------------------------------------------

def test_writer_reproduces_a_real_processed_file_byte_for_byte(tmp_path):
    clip = sorted(real(RAVDESS).glob("*.csv"))[0]
    out = write_aus(read_aus(clip), tmp_path / clip.name)
    assert out.read_bytes() == clip.read_bytes()


def test_write_then_read_round_trips_exactly_and_orders_columns(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.uniform(0, 5, (12, 35)), columns=list(AU_COLUMNS))
    df[list(AU_PRESENCE)] = rng.integers(0, 2, (12, len(AU_PRESENCE)))
    shuffled = df[list(reversed(AU_COLUMNS))]
    back = read_aus(write_aus(shuffled, tmp_path / "clip.csv"))
    pd.testing.assert_frame_equal(back, df.astype("float64"))


def test_written_files_get_the_permissions_open_would_give(tmp_path):
    """Not the owner-only 0600 of a temporary file: converted AU files are for the whole group to read."""
    reference = tmp_path / "reference.csv"
    reference.write_text("x\n")
    path = write_aus(pd.DataFrame([valid_row()] * 3, columns=list(AU_COLUMNS)), tmp_path / "clip.csv")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_writer_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_text(tmp_path, "keep me\n")
    aus = pd.DataFrame([valid_row()] * 3, columns=list(AU_COLUMNS))
    with pytest.raises(AUFileError, match="clip.csv.*overwrite=True"):
        write_aus(aus, path)
    assert path.read_text() == "keep me\n"
    write_aus(aus, path, overwrite=True)
    assert len(read_aus(path)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["clip.csv"]  # no temp file left behind


def test_writer_rejects_extra_columns(tmp_path):
    aus = pd.DataFrame([valid_row()] * 3, columns=list(AU_COLUMNS)).assign(pose_Rx=0.1)
    with pytest.raises(ValueError, match="unexpected pose_Rx"):
        write_aus(aus, tmp_path / "clip.csv")


def test_writer_rejects_nan(tmp_path):
    aus = pd.DataFrame([valid_row()] * 3, columns=list(AU_COLUMNS))
    aus.loc[1, "AU12_r"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_aus(aus, tmp_path / "clip.csv")


# --- conversion and frame-quality policies -------------------------------------------------------

@pytest.fixture
def raw_dir(tmp_path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in (VIDEO, TWO_FACES):
        shutil.copy(real(OPENFACE, name), folder / name)
    return folder


def test_keep_all_conversion_writes_every_frame_of_the_kept_face(raw_dir, tmp_path):
    out = tmp_path / "aus"
    with pytest.warns(AUFileWarning, match="kept face_id 0"):
        qc = convert_folder(raw_dir, out, progress=False)
    qc = qc.set_index("clip")
    assert sorted(p.name for p in out.iterdir()) == sorted([VIDEO, TWO_FACES])
    two = qc.loc[Path(TWO_FACES).stem]
    assert (two.frames_in, two.frames_out, two.failed_frames, two.faces, two.face_kept) == (229, 155, 18, 2, 0)
    assert two.mean_confidence == pytest.approx(0.857355, abs=1e-6)
    video = qc.loc[Path(VIDEO).stem]
    assert (video.frames_in, video.frames_out, video.failed_frames, video.faces) == (158, 158, 0, 1)
    pd.testing.assert_frame_equal(read_aus(out / VIDEO), read_aus(raw_dir / VIDEO))


def test_drop_failed_drops_success_zero_frames(raw_dir, tmp_path):
    out = tmp_path / "aus"
    with pytest.warns(AUFileWarning):
        qc = convert_folder(raw_dir, out, policy="drop_failed", progress=False).set_index("clip")
    assert qc.loc[Path(TWO_FACES).stem, "frames_out"] == 155 - 18
    raw = read_openface_raw(raw_dir / TWO_FACES)
    expected = raw[(raw.face_id == 0) & (raw.success == 1)][list(AU_COLUMNS)].to_numpy(dtype=float)
    np.testing.assert_array_equal(read_aus(out / TWO_FACES).to_numpy(), expected)


def test_drop_failed_with_min_confidence_drops_low_confidence_frames(raw_dir, tmp_path):
    with pytest.warns(AUFileWarning):
        qc = convert_folder(raw_dir, tmp_path / "aus", policy="drop_failed", min_confidence=0.9,
                            progress=False).set_index("clip")
    raw = read_openface_raw(raw_dir / TWO_FACES)
    kept = raw[(raw.face_id == 0) & (raw.success == 1) & (raw.confidence >= 0.9)]
    assert 0 < len(kept) < 155 - 18
    assert qc.loc[Path(TWO_FACES).stem, "frames_out"] == len(kept)
    assert qc.loc[Path(VIDEO).stem, "frames_out"] == 158  # every video frame has confidence 0.98


def test_conversion_never_overwrites_without_permission(raw_dir, tmp_path):
    out = tmp_path / "aus"
    out.mkdir()
    (out / VIDEO).write_text("older result\n")
    with pytest.raises(AUFileError, match=f"{VIDEO}.*overwrite=True"):
        convert_folder(raw_dir, out, progress=False)
    assert (out / VIDEO).read_text() == "older result\n"
    assert not (out / TWO_FACES).exists()  # nothing written when the run is refused
    with pytest.warns(AUFileWarning):
        convert_folder(raw_dir, out, overwrite=True, progress=False)
    assert len(read_aus(out / VIDEO)) == 158


def test_conversion_rejects_processed_files_in_the_raw_folder(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(sorted(real(RAVDESS).glob("*.csv"))[0], raw / "clip.csv")
    with pytest.raises(AUFileError, match="clip.csv is already in the processed"):
        convert_folder(raw, tmp_path / "aus", progress=False)


def test_conversion_rejects_an_unknown_policy(raw_dir, tmp_path):
    with pytest.raises(ValueError, match="policy='best'"):
        convert_folder(raw_dir, tmp_path / "aus", policy="best", progress=False)


def test_conversion_rejects_min_confidence_with_keep_all(raw_dir, tmp_path):
    with pytest.raises(ValueError, match="only applies with policy='drop_failed'"):
        convert_folder(raw_dir, tmp_path / "aus", min_confidence=0.5, progress=False)


def test_qc_table_reports_raw_and_processed_files(tmp_path):
    clip = sorted(real(RAVDESS).glob("*.csv"))[0]
    qc = qc_table([real(OPENFACE, TWO_FACES), clip]).set_index("format")
    raw, processed = qc.loc["raw"], qc.loc["processed"]
    assert (raw.frames, raw.faces, raw.face_kept, raw.failed_frames) == (155, 2, 0, 18)
    assert raw.mean_confidence == pytest.approx(0.857355, abs=1e-6)
    assert processed.frames == len(read_aus(clip))
    assert np.isnan(processed.failed_frames) and np.isnan(processed.mean_confidence)


# --- bad input -----------------------------------------------------------------------------------

def test_missing_file_is_named(tmp_path):
    with pytest.raises(AUFileError, match="nope.csv: no such file"):
        read_aus(tmp_path / "nope.csv")


def test_empty_file_is_rejected(tmp_path):
    with pytest.raises(AUFileError, match=r"clip.csv is empty \(0 bytes\)"):
        read_aus(write_text(tmp_path, ""))


def test_processed_header_only_is_rejected(tmp_path):
    with pytest.raises(AUFileError, match="clip.csv has a header but no frames"):
        read_aus(write_text(tmp_path, processed_text([])))


def test_raw_header_only_is_rejected(tmp_path):
    header = ", ".join(["frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS])
    with pytest.raises(AUFileError, match="has a header but no frames"):
        read_aus(write_text(tmp_path, header + "\n"))


def test_processed_missing_columns_are_listed(tmp_path):
    columns = [c for c in AU_COLUMNS if c not in ("AU12_r", "AU28_c")]
    rows = [[1.0] * len(columns)] * 3
    with pytest.raises(AUFileError, match=r"clip.csv lacks 2 AU column\(s\): AU12_r, AU28_c"):
        read_aus(write_text(tmp_path, processed_text(rows, columns)))


def test_processed_extra_columns_are_listed(tmp_path):
    columns = [*AU_COLUMNS, "frame", "pose_Rx"]
    rows = [valid_row() + [i, 0.1] for i in range(3)]
    with pytest.raises(AUFileError, match="clip.csv: .* also has frame, pose_Rx"):
        read_aus(write_text(tmp_path, processed_text(rows, columns)))


def test_processed_columns_out_of_order_are_reordered_with_a_warning(tmp_path):
    columns = list(reversed(AU_COLUMNS))
    rows = [list(reversed(valid_row(intensity=2.0 + i))) for i in range(3)]
    with pytest.warns(AUFileWarning, match="not in the model order"):
        aus = read_aus(write_text(tmp_path, processed_text(rows, columns)))
    assert list(aus.columns) == list(AU_COLUMNS)
    assert aus["AU01_r"].tolist() == [2.0, 3.0, 4.0]


def test_non_numeric_value_names_line_and_column(tmp_path):
    rows = [valid_row() for _ in range(4)]
    rows[2][AU_COLUMNS.index("AU06_r")] = "n/a"
    with pytest.raises(AUFileError, match=r"non-numeric value 'n/a' at line 4 \(data row 3\), column 'AU06_r'"):
        read_aus(write_text(tmp_path, processed_text(rows)))


def test_nan_value_names_line_and_column(tmp_path):
    rows = [valid_row() for _ in range(4)]
    rows[1][AU_COLUMNS.index("AU45_c")] = "NaN"
    with pytest.raises(AUFileError, match=r"missing \(empty or NaN\) value at line 3 \(data row 2\), column 'AU45_c'"):
        read_aus(write_text(tmp_path, processed_text(rows)))


def test_empty_field_counts_as_missing(tmp_path):
    rows = [valid_row() for _ in range(4)]
    rows[3][0] = ""
    with pytest.raises(AUFileError, match=r"missing .* at line 5 \(data row 4\), column 'AU01_r'"):
        read_aus(write_text(tmp_path, processed_text(rows)))


def test_infinite_value_names_line_and_column(tmp_path):
    rows = [valid_row() for _ in range(4)]
    rows[0][AU_COLUMNS.index("AU17_r")] = "inf"
    with pytest.raises(AUFileError, match=r"infinite value at line 2 \(data row 1\), column 'AU17_r'"):
        read_aus(write_text(tmp_path, processed_text(rows)))


def test_ragged_row_names_its_line(tmp_path):
    text = processed_text([valid_row() for _ in range(3)]).splitlines()
    text[2] += ";0.0"
    with pytest.raises(AUFileError, match="line 3 has 36 fields but the header has 35"):
        read_aus(write_text(tmp_path, "\n".join(text) + "\n"))


def test_blank_lines_do_not_shift_reported_line_numbers(tmp_path):
    rows = [valid_row() for _ in range(3)]
    rows[2][0] = "x"
    lines = processed_text(rows).splitlines()
    lines.insert(2, "")
    with pytest.raises(AUFileError, match=r"at line 5 \(data row 3\)"):
        read_aus(write_text(tmp_path, "\n".join(lines) + "\n"))


def test_out_of_range_intensity_warns_by_default(tmp_path):
    rows = [valid_row() for _ in range(3)]
    rows[1][AU_COLUMNS.index("AU04_r")] = 7.5
    with pytest.warns(AUFileWarning, match=r"AU04_r outside \[0, 5\] in 1 row\(s\), first 7.5 at line 3"):
        aus = read_aus(write_text(tmp_path, processed_text(rows)))
    assert aus.loc[1, "AU04_r"] == 7.5


def test_out_of_range_intensity_raises_when_strict(tmp_path):
    rows = [valid_row() for _ in range(3)]
    rows[1][AU_COLUMNS.index("AU04_r")] = -0.5
    with pytest.raises(AUFileError, match="AU04_r outside"):
        read_aus(write_text(tmp_path, processed_text(rows)), strict=True)


def test_presence_other_than_0_or_1_raises_when_strict(tmp_path):
    rows = [valid_row() for _ in range(3)]
    rows[0][AU_COLUMNS.index("AU28_c")] = 0.5
    with pytest.raises(AUFileError, match="AU28_c not 0 or 1"):
        read_aus(write_text(tmp_path, processed_text(rows)), strict=True)


def test_valid_values_raise_no_warning(tmp_path):
    path = write_text(tmp_path, processed_text([valid_row(0.0, 0), valid_row(5.0, 1)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aus = read_aus(path, strict=True)
    assert len(aus) == 2


def test_one_frame_clip_is_rejected(tmp_path):
    with pytest.raises(AUFileError, match=r"clip.csv has 1 frame\(s\), fewer than min_frames=2"):
        read_aus(write_text(tmp_path, processed_text([valid_row()])))


def test_raw_file_errors_point_at_the_line_of_the_kept_face(tmp_path):
    # OpenFace's own quirks: ", " in the header and ",  " between data fields.
    header = ", ".join(["frame", "face_id", "timestamp", "confidence", "success", *AU_COLUMNS])
    rows = []
    for frame in range(1, 4):
        for face, confidence in ((0, 0.95), (1, 0.40)):
            values = valid_row()
            if frame == 2 and face == 0:
                values[AU_COLUMNS.index("AU25_r")] = "nan"
            rows.append(",  ".join(str(v) for v in [frame, face, frame / 30, confidence, 1, *values]))
    path = write_text(tmp_path, "\n".join([header, *rows]) + "\n")
    with pytest.warns(AUFileWarning, match="kept face_id 0"), \
            pytest.raises(AUFileError, match=r"at line 4 \(data row 3\), column 'AU25_r'"):
        read_aus(path)
