"""Static baselines on per-clip averaged AUs with actor-disjoint folds (the paper's Table 2 protocol)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from aus_lib import paths
from aus_lib.baselines import (
    average_table,
    make_classifier,
    read_average_table,
    static_cv,
    static_cv_predictions,
    write_average_table,
)
from aus_lib.openface import AU_COLUMNS
from aus_lib.ravdess import EMOTIONS, make_name

REAL = paths.SHARED_DATA / "ravdess_real"


@pytest.fixture(autouse=True)
def one_blas_thread():
    # These models are tiny; BLAS threads only contend for the two cores.
    with threadpool_limits(limits=1):
        yield


def _paper_folds():
    try:
        from aus_lib.folds import PAPER_FOLDS
    except ImportError:
        pytest.skip("aus_lib.folds.PAPER_FOLDS is not there yet")
    return PAPER_FOLDS


def synthetic_table(seed: int = 0, shift_actors: tuple[int, ...] = ()) -> pd.DataFrame:
    """Actors 1..24, 8 emotions x 2 clips each; AU means depend on the emotion, plus actor offsets and noise.

    ``shift_actors`` get +50 on AU01_r, so a scaler fitted on their clips would visibly differ.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.5, size=(8, len(AU_COLUMNS)))
    rows = []
    for actor in range(1, 25):
        offset = rng.normal(scale=0.3, size=len(AU_COLUMNS))
        for code in range(1, 9):
            for repetition in (1, 2):
                x = centres[code - 1] + offset + rng.normal(size=len(AU_COLUMNS))
                if actor in shift_actors:
                    x[0] += 50.0
                rows.append({**dict(zip(AU_COLUMNS, x)), "name": make_name(code, 1, 1, repetition, actor)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


@pytest.mark.parametrize("model, param", [("svc", 1), ("knn", 5), ("mlp", 80), ("logreg", 1)])
def test_each_model_is_well_above_chance(table, model, param):
    _paper_folds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MLP at sklearn's default max_iter, as in the paper
        summary = static_cv(table, model, param, "minmax")
    assert list(summary.index) == [1, 2, 3, 4, 5, "mean"]
    assert summary.loc["mean", "n"] == len(table)
    assert summary.loc["mean", "accuracy"] > 0.5  # chance is 1/8
    assert summary.attrs["pooled"]["n"] == len(table)


@pytest.mark.parametrize("norm", [None, "minmax", "standard"])
def test_matches_a_hand_written_fold_with_the_scaler_fitted_on_training_actors(norm):
    folds = _paper_folds()
    table = synthetic_table(seed=3, shift_actors=folds[1])
    pred = static_cv_predictions(table, "svc", 1, norm)
    actors = table["name"].str[-2:].astype(int)
    test = actors.isin(folds[1]).to_numpy()
    X = table[list(AU_COLUMNS)].to_numpy()
    y = table["name"].str[6:8].astype(int).to_numpy() - 1
    scaler = {None: None, "minmax": MinMaxScaler(), "standard": StandardScaler()}[norm]
    X_train, X_test = X[~test], X[test]
    if scaler is not None:
        X_train, X_test = scaler.fit_transform(X_train), scaler.transform(X_test)
    expected = SVC(C=1.0, random_state=2020).fit(X_train, y[~test]).predict(X_test)
    got = pred.loc[pred["fold"] == 1, "prediction"].tolist()
    assert got == [EMOTIONS[c] for c in expected]
    if scaler is not None:
        # the same model with the scaler fitted on all clips predicts differently here, so this test can tell
        leaky = scaler.fit(X)
        leaked = SVC(C=1.0, random_state=2020).fit(leaky.transform(X[~test]), y[~test]).predict(leaky.transform(X[test]))
        assert list(leaked) != list(expected)


def test_is_deterministic(table):
    small = table[table["name"].str[-2:].astype(int) <= 6]
    folds = {1: (1, 2, 3), 2: (4, 5, 6)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = static_cv_predictions(small, "mlp", (16,), "standard", folds)
        second = static_cv_predictions(small, "mlp", (16,), "standard", folds)
    pd.testing.assert_frame_equal(first, second)


def test_test_folds_are_the_papers_actors(table):
    folds = _paper_folds()
    pred = static_cv_predictions(table, "knn", 3, None)
    fold_of = {a: k for k, members in folds.items() for a in members}
    assert (pred["actor"].map(fold_of) == pred["fold"]).all()
    assert sorted(pred["clip"]) == sorted(table["name"])


def test_custom_folds(table):
    folds = {1: tuple(range(1, 13)), 2: tuple(range(13, 25))}
    summary = static_cv(table, "svc", 1, None, folds=folds)
    assert list(summary.index) == [1, 2, "mean"]
    assert list(summary["n"]) == [192, 192, 384]


def test_actors_missing_from_the_folds_are_an_error(table):
    with pytest.raises(ValueError, match=r"Actor\(s\) \[13"):
        static_cv(table, "svc", 1, None, folds={1: tuple(range(1, 7)), 2: tuple(range(7, 13))})


def test_original_format_table_path(tmp_path, table):
    _paper_folds()
    # Written the way the original did: ';', 35 AU columns, then speech, name, path, index.
    lines = [";".join(list(AU_COLUMNS) + ["speech", "name", "path", "index"])]
    for _, row in table.iterrows():
        values = [repr(float(row[c])) for c in AU_COLUMNS]
        lines.append(";".join(values + ["0.42", row["name"], row["name"], "0"]))
    path = tmp_path / "df_average_AUs_total.csv"
    path.write_text("\n".join(lines) + "\n")
    from_file = static_cv(path, "svc", 1, "minmax")
    from_frame = static_cv(table, "svc", 1, "minmax")
    pd.testing.assert_frame_equal(from_file, from_frame)


def test_write_average_table_uses_the_original_layout(tmp_path, table):
    path = write_average_table(table.rename(columns={"name": "clip"}), tmp_path / "avg.csv")
    header = path.read_text().splitlines()[0].split(";")
    assert header == list(AU_COLUMNS) + ["speech", "name", "path", "index"]
    back = read_average_table(path)
    assert list(back["name"]) == list(table["name"])
    assert np.allclose(back[list(AU_COLUMNS)].to_numpy(), table[list(AU_COLUMNS)].to_numpy(), rtol=0, atol=0)


def test_average_table_from_frames():
    rng = np.random.default_rng(2)
    a = pd.DataFrame(rng.random((5, 35)), columns=list(AU_COLUMNS))
    b = pd.DataFrame(rng.random((3, 35)), columns=list(AU_COLUMNS))
    b.iloc[1, 4] = np.nan  # a lost frame value is skipped, as pandas' mean did in the original
    avg = average_table({"01-01-03-02-01-01-12.csv": a, "01-01-04-01-01-01-12": b})
    assert list(avg.columns) == list(AU_COLUMNS) + ["speech", "name", "path", "index"]
    assert list(avg["name"]) == ["01-01-03-02-01-01-12", "01-01-04-01-01-01-12"]
    assert np.allclose(avg.loc[0, list(AU_COLUMNS)].to_numpy(dtype=float), a.mean().to_numpy())
    assert np.allclose(avg.loc[1, list(AU_COLUMNS)].to_numpy(dtype=float), b.mean().to_numpy())


def test_average_table_names_a_clip_without_au_columns():
    with pytest.raises(ValueError, match="clip 01-01-03-02-01-01-12: missing AU column"):
        average_table({"01-01-03-02-01-01-12": pd.DataFrame({"AU01_r": [0.1]})})


def test_bad_clip_name_is_reported_with_its_row(table):
    bad = table.copy()
    bad.loc[5, "name"] = "clip_five"
    with pytest.raises(ValueError, match=r"row 5 \(name = 'clip_five'\)"):
        static_cv(bad, "svc", 1, None)


def test_missing_au_value_is_reported(table):
    bad = table.copy()
    bad.loc[3, "AU12_r"] = np.nan
    with pytest.raises(ValueError, match="column AU12_r"):
        static_cv(bad, "svc", 1, None)


@pytest.mark.parametrize("model, param, message", [
    ("rf", 10, "Unknown model 'rf'"),
    ("svc", -1, "must be > 0"),
    ("knn", 2.5, "n_neighbors as a positive int"),
    ("mlp", "(80, -1)", "hidden_layer_sizes"),
])
def test_bad_model_or_param(model, param, message):
    with pytest.raises(ValueError, match=message):
        make_classifier(model, param)


def test_bad_norm(table):
    with pytest.raises(ValueError, match="Unknown norm 'zscore'"):
        static_cv(table, "svc", 1, "zscore")


def test_estimators_follow_the_original_settings():
    assert make_classifier("svc", "1").get_params()["C"] == 1.0
    assert make_classifier("svc", 1).get_params()["random_state"] == 2020
    assert make_classifier("mlp", "80").get_params()["hidden_layer_sizes"] == 80
    assert make_classifier("mlp", (80, 40)).get_params()["random_state"] == 2020
    assert make_classifier("knn", 7).get_params()["n_neighbors"] == 7
    assert make_classifier("logreg", 0.5).get_params()["max_iter"] == 10000


@pytest.mark.skipif(not REAL.is_dir(), reason="real RAVDESS clips not available")
def test_real_clips_average_and_classify_above_chance():
    avg = average_table(REAL)
    assert len(avg) == 120
    first = sorted(REAL.glob("*.csv"))[0]
    frames = pd.read_csv(first, sep=";")
    assert np.allclose(avg.loc[0, list(AU_COLUMNS)].to_numpy(dtype=float), frames[list(AU_COLUMNS)].mean().to_numpy())
    summary = static_cv(avg, "svc", 1, "minmax", folds={1: (1,), 2: (2,)})
    assert list(summary["n"]) == [60, 60, 120]
    assert summary.loc["mean", "accuracy"] > 0.25  # chance is 1/8
