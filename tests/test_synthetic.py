import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aus_lib import baselines, openface, paths, synthetic
from aus_lib.openface import AU_COLUMNS, AU_INTENSITY, PROCESSED_SEP
from aus_lib.ravdess import parse_name


@pytest.fixture(scope="module")
def two_actors(tmp_path_factory) -> Path:
    """Actors 1 and 2 (120 clips), processed and raw files."""
    out = tmp_path_factory.mktemp("synthetic_two")
    synthetic.generate(out, actors=[1, 2], raw=True)
    return out


@pytest.fixture(scope="module")
def full_set(tmp_path_factory) -> Path:
    """The default 1440-clip set, made by ensure_default."""
    return synthetic.ensure_default(tmp_path_factory.mktemp("synthetic_full"))


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=PROCESSED_SEP)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.csv"))}


def test_same_seed_gives_identical_files(tmp_path):
    synthetic.generate(tmp_path / "a", seed=5, actors=[3])
    synthetic._actor.cache_clear()  # as in a fresh process: actor traits are drawn again
    synthetic.generate(tmp_path / "b", seed=5, actors=[3])
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def test_different_seed_gives_different_files(tmp_path):
    synthetic.generate(tmp_path / "a", seed=5, actors=[3])
    synthetic.generate(tmp_path / "b", seed=6, actors=[3])
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_clip_content_does_not_depend_on_other_actors(tmp_path, two_actors):
    synthetic.generate(tmp_path, actors=[2])
    alone = _bytes(tmp_path)
    together = {name: data for name, data in _bytes(two_actors).items() if name.endswith("-02.csv")}
    assert alone == together


def test_full_set_has_the_1440_ravdess_speech_clips():
    names = synthetic.clip_names()
    assert len(names) == len(set(names)) == 1440
    clips = [parse_name(n) for n in names]
    assert {(c.modality, c.vocal_channel) for c in clips} == {(1, 1)}
    assert Counter(c.actor for c in clips) == {a: 60 for a in range(1, 25)}


def test_two_actor_layout(two_actors):
    files = sorted(two_actors.glob("*.csv"))
    assert len(files) == 120
    clips = [parse_name(p) for p in files]
    for actor in (1, 2):
        emotions = Counter(c.emotion for c in clips if c.actor == actor)
        assert emotions.pop("neutral") == 4
        assert emotions == {e: 8 for e in ("calm", "happy", "sad", "angry", "fear", "disgust", "surprise")}
    assert {c.intensity for c in clips if c.emotion == "neutral"} == {1}


def test_files_are_in_the_processed_format(two_actors):
    for path in sorted(two_actors.glob("*.csv")):
        header = path.read_text().splitlines()[0]
        assert header.split(PROCESSED_SEP) == list(AU_COLUMNS), path
        assert synthetic.MIN_FRAMES <= len(_read(path)) <= synthetic.MAX_FRAMES, path


def test_values_look_like_openface_output(two_actors):
    frames = pd.concat([_read(p) for p in sorted(two_actors.glob("*.csv"))])
    intensity = frames[list(AU_INTENSITY)].to_numpy()
    presence = frames[list(openface.AU_PRESENCE)].to_numpy()
    assert intensity.min() >= 0 and intensity.max() <= 5
    assert np.allclose(intensity, np.round(intensity, 2))
    assert set(np.unique(presence)) <= {0.0, 1.0}


def test_lengths_spread_like_real_clips():
    lengths = np.array([len(synthetic.synthesize(name)[0]) for name in synthetic.clip_names(range(1, 9))])
    assert lengths.min() >= 88 and lengths.max() <= 157
    assert 104 <= np.median(lengths) <= 114
    assert lengths.std() > 5


def test_presence_agrees_with_intensity_most_of_the_time(two_actors):
    frames = pd.concat([_read(p) for p in sorted(two_actors.glob("*.csv"))])
    # AU05 presence is mostly actor bias in real OpenFace output, AU23 is rarely detected at all.
    aus = [c[:4] for c in AU_INTENSITY if c[:4] not in ("AU05", "AU23")]
    high = np.concatenate([frames.loc[frames[f"{au}_r"] >= 1.5, f"{au}_c"] for au in aus])
    zero = np.concatenate([frames.loc[frames[f"{au}_r"] == 0, f"{au}_c"] for au in aus])
    assert high.mean() > 0.85
    assert zero.mean() < 0.1
    assert 0 < (1 - high).sum()  # a separate classifier: some disagreement remains


def test_lost_tracking_frames_are_all_zero_rows(two_actors):
    lost = {}
    for name in synthetic.clip_names([1, 2]):
        mask = synthetic.synthesize(name)[1]
        if mask.any():
            lost[name] = mask
    assert lost, "expected a few clips with lost tracking among 120"
    for name, mask in lost.items():
        frame = _read(two_actors / f"{name}.csv").to_numpy()
        assert (frame[mask] == 0).all()
        assert (frame[~mask].sum(axis=1) > 0).all()


def test_existing_files_are_kept_without_overwrite(tmp_path):
    path = synthetic.generate(tmp_path, actors=[4])[0]
    original = path.read_bytes()
    path.write_text("edited by hand\n")
    synthetic.generate(tmp_path, actors=[4])
    assert path.read_text() == "edited by hand\n"
    synthetic.generate(tmp_path, actors=[4], overwrite=True)
    assert path.read_bytes() == original


def test_another_seed_in_the_same_folder_needs_overwrite(tmp_path):
    synthetic.generate(tmp_path / "mixed", seed=1, actors=[4])
    with pytest.raises(synthetic.SyntheticDataError, match="overwrite=True"):
        synthetic.generate(tmp_path / "mixed", seed=2, actors=[4])
    synthetic.generate(tmp_path / "mixed", seed=2, actors=[4], overwrite=True)
    synthetic.generate(tmp_path / "fresh", seed=2, actors=[4])
    assert _bytes(tmp_path / "mixed") == _bytes(tmp_path / "fresh")


def test_ensure_default_makes_the_full_set(full_set, two_actors):
    assert len(list(full_set.glob("*.csv"))) == 1440
    subset = _bytes(two_actors)
    assert {name: data for name, data in _bytes(full_set).items() if name in subset} == subset


def test_ensure_default_completes_a_partial_set(full_set):
    removed = sorted(full_set.glob("*.csv"))[700]
    content = removed.read_bytes()
    removed.unlink()
    assert synthetic.ensure_default(full_set) == full_set
    assert removed.read_bytes() == content


def test_unknown_actor_is_rejected(tmp_path):
    with pytest.raises(synthetic.SyntheticDataError, match="actor 25"):
        synthetic.generate(tmp_path, actors=[25])


def test_raw_files_have_the_openface_header_style(two_actors):
    path = two_actors / "raw" / "01-01-03-02-01-01-01.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    assert header[:5] == ["frame", " face_id", " timestamp", " confidence", " success"]
    assert all(name.startswith(" ") for name in header[1:])
    names = [name.strip() for name in header]
    assert {"pose_Tx", "pose_Rz"} <= set(names)
    assert names[-35:] == list(AU_COLUMNS)
    data = np.array([[float(v) for v in row] for row in rows[1:]])
    processed = _read(two_actors / path.name).to_numpy()
    assert np.array_equal(data[:, -35:], processed)
    assert np.array_equal(data[:, 0], np.arange(1, len(processed) + 1))
    assert np.allclose(data[:, 2], np.arange(len(processed)) / 30, atol=1e-3)


def test_raw_files_mark_lost_frames_as_failed(two_actors):
    name = next(n for n in synthetic.clip_names([1, 2]) if synthetic.synthesize(n)[1].any())
    lost = synthetic.synthesize(name)[1]
    raw = pd.read_csv(two_actors / "raw" / f"{name}.csv", skipinitialspace=True)
    assert (raw.loc[lost, "success"] == 0).all() and (raw.loc[~lost, "success"] == 1).all()
    assert (raw.loc[lost, "confidence"] == 0).all()


def test_read_aus_reads_the_raw_files(two_actors):
    name = "01-01-06-01-02-01-02"
    raw = openface.read_aus(two_actors / "raw" / f"{name}.csv")
    processed = openface.read_aus(two_actors / f"{name}.csv")
    assert list(raw.columns) == list(AU_COLUMNS)
    np.testing.assert_array_equal(raw.to_numpy(), processed.to_numpy())


def test_calm_and_neutral_differ_in_time_course_not_in_average():
    steps, means = {}, {}
    for name in synthetic.clip_names(range(1, 5)):
        emotion = parse_name(name).emotion
        if emotion in ("calm", "neutral"):
            jaw = synthetic.synthesize(name)[0]["AU26_r"]
            steps.setdefault(emotion, []).append(jaw.diff().abs().mean())
            means.setdefault(emotion, []).append(jaw.mean())
    assert abs(np.mean(means["calm"]) - np.mean(means["neutral"])) < 0.1
    assert np.mean(steps["calm"]) < 0.8 * np.mean(steps["neutral"])


def test_surprise_peaks_earlier_than_fear():
    peaks = {}
    for name in synthetic.clip_names(range(1, 5)):
        emotion = parse_name(name).emotion
        if emotion in ("fear", "surprise"):
            clip = synthetic.synthesize(name)[0]
            brows = (clip["AU01_r"] + clip["AU02_r"]).to_numpy()
            peaks.setdefault(emotion, []).append(brows.argmax() / len(brows))
    assert np.median(peaks["surprise"]) + 0.2 < np.median(peaks["fear"])


def test_compare_to_real_puts_statistics_side_by_side(real_ravdess, full_set):
    table = synthetic.compare_to_real(real_ravdess, full_set)
    assert list(table.columns) == ["real", "synthetic", "difference"]
    per_au = table.drop(index="clip")["synthetic"].unstack()
    assert set(per_au.columns) == {"mean", "std", "smoothness", "presence"}
    assert len(per_au) == 18
    clip = table.loc["clip"]
    assert clip.loc["frames_median", "real"] == pytest.approx(112)
    assert 88 <= clip.loc["frames_min", "synthetic"] <= clip.loc["frames_max", "synthetic"] <= 157
    # Calibrated: the active AUs' means, spreads and smoothness within a factor of 1.5 of the real ones.
    for statistic in ("mean", "std", "smoothness"):
        rows = table.xs(statistic, level="statistic")
        active = rows[table.xs("mean", level="statistic")["real"] > 0.3]
        assert (active["synthetic"] / active["real"]).between(1 / 1.5, 1.5).all(), statistic
    assert clip.loc["blinks_per_s", "synthetic"] == pytest.approx(clip.loc["blinks_per_s", "real"], rel=0.3)


def test_compare_to_real_names_a_missing_folder(tmp_path, two_actors):
    with pytest.raises(synthetic.SyntheticDataError, match="nowhere"):
        synthetic.compare_to_real(tmp_path / "nowhere", two_actors)


def test_plot_real_vs_synthetic_saves_a_titled_png(tmp_path, two_actors):
    synthetic.generate(tmp_path / "other", actors=[3])
    path = tmp_path / "figures" / "real_vs_synthetic.png"
    fig = synthetic.plot_real_vs_synthetic(tmp_path / "other", two_actors, path)
    assert fig._suptitle.get_text()
    assert all(ax.get_title() and ax.get_xlabel() for ax in fig.axes)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_static_baseline_is_above_chance_and_below_95_percent(tiny_synthetic):
    """The synthetic set is neither noise nor trivially separable from clip averages."""
    table = baselines.average_table(tiny_synthetic)
    accuracy = baselines.static_cv(table, "svc", 1.0, "minmax", folds={1: (1, 2), 2: (3, 4)}).attrs["pooled"]["accuracy"]
    assert 0.2 < accuracy < 0.95


def test_ensure_default_regenerates_a_set_of_another_seed(tmp_path):
    synthetic.generate(tmp_path, seed=1, actors=[1])
    before = (tmp_path / "01-01-01-01-01-01-01.csv").read_bytes()
    synthetic.ensure_default(tmp_path, seed=2)
    assert (tmp_path / "01-01-01-01-01-01-01.csv").read_bytes() != before
    assert len(list(tmp_path.glob("*.csv"))) == 1440


def test_ensure_default_uses_the_configured_folder(monkeypatch, full_set):
    monkeypatch.setattr(paths, "SYNTHETIC_DIR", full_set)
    assert synthetic.ensure_default() == full_set


def test_written_files_are_readable_by_everyone(two_actors):
    assert (two_actors / "01-01-01-01-01-01-01.csv").stat().st_mode & 0o777 == 0o644
