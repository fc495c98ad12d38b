import pytest

import numpy as np

from aus_lib.ravdess import EMOTIONS, LABELS, RavdessNameError, emotion_name, emotion_names, make_name, parse_name


def test_parse_name_decodes_all_fields():
    c = parse_name("01-01-03-02-01-01-12.csv")
    assert (c.emotion, c.intensity, c.statement, c.repetition, c.actor) == ("happy", 2, 1, 1, 12)
    assert c.stem == "01-01-03-02-01-01-12"


def test_parse_name_accepts_paths_and_no_extension():
    assert parse_name("/data/Actor_05/01-01-08-01-02-02-05").actor == 5
    assert parse_name("some/dir/02-01-06-01-01-02-24.CSV").emotion == "fear"


@pytest.mark.parametrize("code,emotion", list(enumerate(EMOTIONS, start=1)))
def test_every_emotion_code(code, emotion):
    assert parse_name(f"01-01-{code:02d}-01-01-01-01").emotion == emotion


def test_labels_follow_the_original_alphabetical_order():
    assert LABELS == ("angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert parse_name("01-01-05-01-01-01-01").label == 0  # angry
    assert parse_name("01-01-08-01-01-01-01").label == 7  # surprise


@pytest.mark.parametrize("bad", [
    "clip.csv", "01-01-03-02-01-01.csv", "01-01-09-01-01-01-01.csv", "01-01-03-01-01-01-25.csv",
    "01-01-03-01-01-01-00.csv", "01-01-03-03-01-01-01.csv", "01-01-01-02-01-01-01.csv", "1-1-3-2-1-1-12.csv",
])
def test_bad_names_raise_naming_the_file(bad):
    with pytest.raises(RavdessNameError, match=bad.replace(".", r"\.")):
        parse_name(bad)


def test_make_name_round_trip():
    name = make_name("disgust", 2, 1, 2, 17)
    c = parse_name(name)
    assert (c.emotion, c.intensity, c.statement, c.repetition, c.actor) == ("disgust", 2, 1, 2, 17)


def test_emotion_name_reads_names_in_any_case_and_label_indices():
    assert emotion_name(" Happy ") == "happy"
    assert emotion_name(np.int64(LABELS.index("sad"))) == "sad"
    assert list(emotion_names(["fear", 0])) == ["fear", LABELS[0]]


@pytest.mark.parametrize("bad, message", [("joy", r"labels\[1\] = 'joy': unknown emotion 'joy'"),
                                          (8, r"labels\[1\] = 8: emotion index out of range"),
                                          (True, "unknown emotion True")])
def test_emotion_names_refuse_what_is_no_emotion_naming_its_position(bad, message):
    with pytest.raises(ValueError, match=message):
        emotion_names(["calm", bad])
