import pandas as pd
import pytest

from aus_lib import folds as F
from aus_lib.ravdess import make_name, parse_name


def manifest_for(actors, emotions=("neutral", "happy", "sad", "angry"), tmp_path=None):
    rows = []
    for a in actors:
        for e in emotions:
            name = make_name(e, 1, 1, 1, a)
            path = (tmp_path / f"{name}.csv") if tmp_path else f"/data/{name}.csv"
            if tmp_path:
                path.write_text("x")
            rows.append({"path": str(path), "clip": name, "emotion": e, "actor": a})
    return pd.DataFrame(rows)


def test_paper_split_for_five_folds_on_all_actors():
    folds = F.make_folds({a: 60 for a in range(1, 25)}, 5)
    assert folds == F.PAPER_FOLDS
    assert folds[5] == (1, 4, 9, 22)


def test_paper_split_covers_each_actor_once():
    actors = sorted(a for members in F.PAPER_FOLDS.values() for a in members)
    assert actors == list(range(1, 25))


@pytest.mark.parametrize("actors,k", [(range(1, 6), 5), (range(1, 25), 4), (range(3, 20), 3), (range(1, 25), 24)])
def test_other_splits_are_actor_disjoint_and_complete(actors, k):
    counts = {a: 60 for a in actors}
    folds = F.make_folds(counts, k, seed=7)
    F.check_folds(folds, list(actors))
    assert len(folds) == k


def test_balanced_split_in_clip_count():
    counts = {a: 60 for a in range(1, 25)} | {3: 30, 4: 20}
    folds = F.make_folds(counts, 3, seed=1)
    loads = [sum(counts[a] for a in m) for m in folds.values()]
    assert max(loads) - min(loads) <= 60


def test_split_is_deterministic_and_seeded():
    counts = {a: 60 for a in range(1, 25)}
    assert F.make_folds(counts, 4, seed=3) == F.make_folds(counts, 4, seed=3)
    assert F.make_folds(counts, 4, seed=3) != F.make_folds(counts, 4, seed=4)


def test_five_actors_five_folds_is_one_actor_per_fold():
    folds = F.make_folds({a: 60 for a in range(1, 6)}, 5)
    assert sorted(len(m) for m in folds.values()) == [1] * 5


def test_more_folds_than_actors_is_refused():
    with pytest.raises(F.FoldError, match="only 2 actor"):
        F.make_folds({1: 60, 2: 60}, 3)


def test_explicit_folds_are_checked():
    counts = {a: 60 for a in range(1, 5)}
    assert F.make_folds(counts, 2, explicit={1: [1, 2], 2: [3, 4]}) == {1: (1, 2), 2: (3, 4)}
    with pytest.raises(F.FoldError, match="Actor 2 is in the test part of folds 1 and 2"):
        F.make_folds(counts, 2, explicit={1: [1, 2], 2: [2, 3, 4]})
    with pytest.raises(F.FoldError, match=r"Actor\(s\) \[4\]"):
        F.make_folds(counts, 2, explicit={1: [1, 2], 2: [3]})


def test_every_clip_is_tested_exactly_once():
    m = F.assign_folds(manifest_for(range(1, 25)), F.PAPER_FOLDS)
    assert m["fold"].between(1, 5).all()
    assert m.groupby("actor")["fold"].nunique().eq(1).all()


def test_fold_files_round_trip_in_the_original_format(tmp_path):
    m = F.assign_folds(manifest_for(range(1, 7), tmp_path=tmp_path), F.make_folds({a: 4 for a in range(1, 7)}, 3))
    F.write_fold_lists(m, tmp_path / "folds")
    complete = (tmp_path / "folds" / "complete_dataset_3CV.txt").read_text().splitlines()
    first = complete[0].split("\t")
    assert len(first) == 5 and first[0] == "00000" and first[3].endswith(".csv")
    train = (tmp_path / "folds" / "training-fold_1_outof_3.txt").read_text().splitlines()
    val = (tmp_path / "folds" / "validation-fold_1_outof_3.txt").read_text().splitlines()
    assert all(len(line.split("\t")) == 4 for line in train + val)
    assert len(train) + len(val) == len(m)
    back = F.read_fold_lists(tmp_path / "folds", 3)
    assert dict(zip(back["clip"], back["fold"])) == dict(zip(m["clip"], m["fold"]))
    assert list(back["label"]) == list(m["emotion"])


def test_numeric_labels_in_original_lists_are_read(tmp_path):
    name = make_name("happy", 1, 1, 1, 3)
    path = tmp_path / "training-fold_1_outof_5.txt"
    path.write_text(f"00000\t4\t/x/{name}.csv\t{name}.csv\n")
    assert F.read_fold_list(path)["label"].tolist() == ["happy"]


def test_fold_lists_pointing_to_missing_files_are_refused(tmp_path):
    m = F.assign_folds(manifest_for(range(1, 5)), F.make_folds({a: 4 for a in range(1, 5)}, 2))
    F.write_fold_lists(m, tmp_path)
    with pytest.raises(F.FoldError, match="do not exist"):
        F.read_fold_lists(tmp_path, 2)


def test_actor_in_two_test_folds_in_a_list_is_refused(tmp_path):
    m = F.assign_folds(manifest_for(range(1, 5), tmp_path=tmp_path), {1: (1, 2), 2: (3, 4)})
    m.loc[0, "fold"] = 2  # one clip of actor 1 now tests in fold 2
    F.write_fold_lists(m, tmp_path / "f")
    with pytest.raises(F.FoldError, match="Actor 1 is in more than one test fold"):
        F.read_fold_lists(tmp_path / "f", 2)


def test_fold_without_an_emotion_in_training_is_refused():
    m = manifest_for(range(1, 5))
    m = m[~((m["emotion"] == "sad") & (m["actor"] != 1))]  # only actor 1 has sad clips
    m = F.assign_folds(m, {1: (1, 2), 2: (3, 4)})
    with pytest.raises(F.FoldError, match=r"Fold 1: the training part has no clip of \['sad'\]"):
        F.check_training_emotions(m)


def test_make_fold_files_writes_manifest_and_lists(tmp_path):
    m = manifest_for(range(1, 5), tmp_path=tmp_path)
    out = tmp_path / "folds"
    table = F.make_fold_files(m, out, kfolds=2, seed=1)
    back = F.read_manifest(out, 2)
    assert sorted(back["clip"]) == sorted(table["clip"])
    assert (out / "validation-fold_2_outof_2.txt").is_file()
    assert parse_name(back["clip"][0]).actor in range(1, 5)


def test_make_fold_files_never_replaces_another_split_silently(tmp_path):
    m = manifest_for(range(1, 5), tmp_path=tmp_path)
    out = tmp_path / "folds"
    F.make_fold_files(m, out, kfolds=2, seed=1)
    F.make_fold_files(m, out, kfolds=2, seed=1)  # the same split again is fine
    other = next(s for s in range(2, 50) if F.make_folds({a: 4 for a in range(1, 5)}, 2, seed=s)
                 != F.make_folds({a: 4 for a in range(1, 5)}, 2, seed=1))
    with pytest.raises(F.FoldError, match="already holds a different split"):
        F.make_fold_files(m, out, kfolds=2, seed=other)
    F.make_fold_files(m, out, kfolds=2, seed=other, overwrite=True)
