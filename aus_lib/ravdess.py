"""RAVDESS clip names and the emotion label sets used throughout the project.

A RAVDESS file name has seven two-digit fields, ``MM-VV-EE-II-SS-RR-AA``:
modality, vocal channel, emotion, intensity, statement, repetition, actor.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Emotion codes 01..08 as RAVDESS defines them.
EMOTION_BY_CODE = {
    1: "neutral", 2: "calm", 3: "happy", 4: "sad",
    5: "angry", 6: "fear", 7: "disgust", 8: "surprise",
}
# The label order of the original sequenceLearning pipeline (alphabetical). Every saved
# file (checkpoints, posteriors, confusion matrices) uses it, so outputs line up with
# files written by the original code.
LABELS = tuple(sorted(EMOTION_BY_CODE.values()))  # angry, calm, disgust, fear, happy, neutral, sad, surprise
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
# The order people read emotions in (RAVDESS code order), for tables and figures.
EMOTIONS = tuple(EMOTION_BY_CODE[c] for c in sorted(EMOTION_BY_CODE))
CODE_BY_EMOTION = {name: code for code, name in EMOTION_BY_CODE.items()}

MODALITY = {1: "full-AV", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNEL = {1: "speech", 2: "song"}
INTENSITY = {1: "normal", 2: "strong"}
STATEMENT = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
N_ACTORS = 24

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


class RavdessNameError(ValueError):
    """A file name that is not a RAVDESS clip name."""


@dataclass(frozen=True)
class ClipName:
    """The seven fields of a RAVDESS clip name, decoded."""

    stem: str
    modality: int
    vocal_channel: int
    emotion_code: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def emotion(self) -> str:
        return EMOTION_BY_CODE[self.emotion_code]

    @property
    def label(self) -> int:
        """Index of the emotion in :data:`LABELS` (the original pipeline's order)."""
        return LABEL_INDEX[self.emotion]

    @property
    def intensity_name(self) -> str:
        return INTENSITY[self.intensity]

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 else "female"

    def as_dict(self) -> dict:
        return {
            "clip": self.stem, "modality": self.modality, "vocal_channel": self.vocal_channel,
            "emotion": self.emotion, "intensity": self.intensity, "statement": self.statement,
            "repetition": self.repetition, "actor": self.actor,
        }


def clip_stem(name: str | Path) -> str:
    """The clip name without folders and extension (``a/b/01-01-03-02-01-01-12.csv`` → stem)."""
    stem = Path(str(name)).name
    for suffix in (".csv", ".mp4", ".wav", ".txt"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def parse_name(name: str | Path) -> ClipName:
    """Decode a RAVDESS clip name, with or without folders and extension.

    >>> parse_name("01-01-03-02-01-01-12.csv").emotion
    'happy'
    """
    stem = clip_stem(name)
    match = _NAME.match(stem)
    where = f"{str(name)!r}"
    if match is None:
        raise RavdessNameError(
            f"{where} is not a RAVDESS clip name: expected seven two-digit fields "
            "MM-VV-EE-II-SS-RR-AA (modality, vocal channel, emotion, intensity, statement, "
            "repetition, actor), e.g. 01-01-03-02-01-01-12.csv. Rename the file after the clip "
            "it was extracted from."
        )
    mod, voc, emo, inten, stmt, rep, actor = (int(g) for g in match.groups())
    checks = [
        ("modality", mod, MODALITY), ("vocal channel", voc, VOCAL_CHANNEL),
        ("emotion", emo, EMOTION_BY_CODE), ("intensity", inten, INTENSITY),
        ("statement", stmt, STATEMENT), ("repetition", rep, {1: 1, 2: 2}),
    ]
    for field, value, allowed in checks:
        if value not in allowed:
            raise RavdessNameError(
                f"{where}: {field} code {value:02d} is out of range; RAVDESS uses "
                f"{', '.join(f'{c:02d}' for c in allowed)}."
            )
    if not 1 <= actor <= N_ACTORS:
        raise RavdessNameError(f"{where}: actor code {actor:02d} is out of range; RAVDESS actors are 01-24.")
    if emo == 1 and inten == 2:
        raise RavdessNameError(f"{where}: neutral clips have no strong intensity (field 4 must be 01).")
    return ClipName(stem, mod, voc, emo, inten, stmt, rep, actor)


def make_name(emotion: str | int, intensity: int, statement: int, repetition: int, actor: int,
              modality: int = 1, vocal_channel: int = 1) -> str:
    """Compose a clip stem; ``emotion`` is a name or a RAVDESS code."""
    code = emotion if isinstance(emotion, int) else CODE_BY_EMOTION[emotion]
    return "-".join(f"{v:02d}" for v in (modality, vocal_channel, code, intensity, statement, repetition, actor))


def emotion_name(label: str | int, what: str = "label") -> str:
    """The emotion name of ``label``: a name (any case) or an index into :data:`LABELS` (the saved files' order).
    ``what`` names the value in the error message."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not 0 <= int(label) < len(LABELS):
            raise ValueError(f"{what} = {label}: emotion index out of range; indices follow ravdess.LABELS "
                             f"(0..{len(LABELS) - 1}: {', '.join(LABELS)}).")
        return LABELS[int(label)]
    name = str(label).strip().lower()
    if name not in LABEL_INDEX:
        raise ValueError(f"{what} = {label!r}: unknown emotion {label!r}; expected one of {', '.join(EMOTIONS)} "
                         "or an index into ravdess.LABELS.")
    return name


def emotion_names(labels: Iterable, what: str = "labels") -> np.ndarray:
    """:func:`emotion_name` of every label, as an object array; errors name the position (``labels[3]``)."""
    return np.array([emotion_name(v, f"{what}[{i}]") for i, v in enumerate(labels)], dtype=object)
