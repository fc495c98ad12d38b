import numpy as np
import pytest

from aus_lib import dataset
from aus_lib.openface import AU_COLUMNS


def test_manifest_has_one_checked_row_per_clip(tiny_synthetic):
    m = dataset.build_manifest(tiny_synthetic, progress=False)
    assert len(m) == 4 * 60
    assert set(m["actor"]) == {1, 2, 3, 4}
    assert {"path", "file", "clip", "emotion", "intensity", "statement", "repetition", "actor", "label", "frames"} <= set(m)
    assert m["frames"].between(88, 157).all()


def test_manifest_of_the_real_clips(real_ravdess):
    m = dataset.build_manifest(real_ravdess, progress=False)
    assert len(m) == 120 and set(m["actor"]) == {1, 2}
    assert m.groupby("emotion").size().to_dict()["neutral"] == 8


def test_missing_folder_and_empty_folder(tmp_path):
    from aus_lib.clipfiles import find_clips

    with pytest.raises(dataset.DataError, match="does not exist"):
        find_clips(tmp_path / "nope")
    with pytest.raises(dataset.DataError, match="no .csv files"):
        find_clips(tmp_path)


def _write(path, rows, header=";".join(AU_COLUMNS)):
    path.write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))


def test_every_bad_file_is_reported_together(tmp_path):
    good = ";".join(["0.5"] * 17 + ["1"] * 18)
    _write(tmp_path / "01-01-03-01-01-01-01.csv", [good, good, good])
    _write(tmp_path / "not_a_clip.csv", [good, good])
    (tmp_path / "01-01-04-01-01-01-01.csv").write_text("")
    _write(tmp_path / "01-01-05-01-01-01-01.csv", [good, good.replace("0.5", "abc", 1)])
    _write(tmp_path / "01-01-06-01-01-01-01.csv", [good, good.replace("0.5", "nan", 1)])
    _write(tmp_path / "01-01-07-01-01-01-01.csv", ["0.5;" * 16 + "0.5"], header=";".join(AU_COLUMNS[:17]))
    with pytest.raises(dataset.DataError) as err:
        dataset.build_manifest(tmp_path, progress=False)
    msg = str(err.value)
    assert "5 problem(s)" in msg
    for name in ("not_a_clip.csv", "01-01-04-01-01-01-01", "01-01-05-01-01-01-01", "01-01-06-01-01-01-01",
                 "01-01-07-01-01-01-01"):
        assert name in msg


def test_duplicate_clip_names_are_refused(tmp_path):
    good = ";".join(["0.5"] * 17 + ["1"] * 18)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _write(tmp_path / sub / "01-01-03-01-01-01-01.csv", [good, good])
    with pytest.raises(dataset.DataError, match="Duplicate clip 01-01-03-01-01-01-01"):
        dataset.build_manifest(tmp_path, recursive=True, progress=False)


def test_clips_load_padded_in_manifest_order(tiny_synthetic, tmp_path):
    m = dataset.build_manifest(tiny_synthetic, progress=False)
    data = dataset.load_clips(m, cache_dir=tmp_path / "c", progress=False)
    assert data.features.shape == (len(m), m["frames"].max(), 35)
    assert data.features.dtype == np.float32
    assert list(data.lengths) == list(m["frames"])
    i = int(np.argmin(data.lengths))
    assert np.all(data.features[i, data.lengths[i]:] == 0)
    assert data.names == list(m["clip"])


def test_cache_is_used_and_invalidated_by_a_changed_file(tiny_synthetic, tmp_path):
    import shutil

    folder = tmp_path / "aus"
    shutil.copytree(tiny_synthetic, folder)
    m = dataset.build_manifest(folder, progress=False)
    first = dataset.load_clips(m, cache_dir=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").glob("clips-*.npz"))) == 1
    again = dataset.load_clips(m, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(first.features, again.features)
    path = m["path"][0]
    lines = open(path).read().splitlines()
    lines[1] = ";".join(["1.0"] * 17 + ["1"] * 18)
    open(path, "w").write("\n".join(lines) + "\n")
    changed = dataset.load_clips(m, cache_dir=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").glob("clips-*.npz"))) == 2
    assert changed.features[0, 0, 0] == 1.0 and first.features[0, 0, 0] != 1.0


def test_subset_trims_padding(tiny_synthetic):
    m = dataset.build_manifest(tiny_synthetic, progress=False)
    data = dataset.load_clips(m, cache=False, progress=False)
    short = np.argsort(data.lengths)[:3]
    sub = data.subset(short)
    assert sub.features.shape[1] == data.lengths[short].max()


def test_clips_validated_are_not_parsed_again_when_passed_and_only_then(tiny_synthetic, tmp_path, monkeypatch):
    from aus_lib import openface

    parsed = {}
    m = dataset.build_manifest(tiny_synthetic, progress=False, parsed=parsed)
    calls = []
    real = openface.read_aus
    monkeypatch.setattr(openface, "read_aus", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    fresh = dataset.load_clips(m, cache=False, progress=False, parsed=parsed)
    assert calls == []
    again = dataset.load_clips(m, cache=False, progress=False)  # nothing kept behind the caller's back
    assert len(calls) == len(m)
    np.testing.assert_array_equal(fresh.features, again.features)
