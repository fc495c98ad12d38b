"""The built-in synthetic RAVDESS-like data set: OpenFace AU sequences for 24 actors x 60 speech clips.

It lets every notebook run with no data given. Clips are generated from FACS emotion prototypes
(happy AU6+AU12, sad AU1+AU4+AU15, ...) with an onset-apex-offset time course, speech movement
on AU25/AU26, blinks on AU45, per-actor baselines, style and expressiveness, sensor noise, OpenFace-like
presence columns and a few lost-tracking frames. The statistics were calibrated against the 120 real
clips of actors 1-2 (:func:`compare_to_real` shows how close they are).

The task is made about as hard as real RAVDESS for a classifier that averages each clip (see
``bench/calibrate_synthetic.py``), while the *timing* carries what an average loses: every emotion
has its own onset speed, apex position and dynamics, and the expression envelope is normalised to
the same clip mean, so calm and neutral, or fear and surprise, whose averages nearly coincide,
differ in their time course (speech rhythm, blink shape, a fast early surprise against a slow
trembling fear). A sequence model can therefore beat the static baseline (with the default seed:
SVC about 48 %, MLP about 56 %, SVC given crude timing features about 71 %; chance is 12.5 %).

A clip's content depends only on ``(seed, clip name)``: generating a subset of actors gives the
same files for those actors as the full set.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aus_lib import paths
from aus_lib.openface import AU_COLUMNS, AU_INTENSITY, AU_PRESENCE, PROCESSED_SEP, read_aus
from aus_lib.ravdess import EMOTIONS, N_ACTORS, ClipName, make_name, parse_name
from aus_lib.runs import atomic_path

FPS = 30
MIN_FRAMES, MAX_FRAMES = 88, 157          # real RAVDESS speech clips: 88-157 frames, median 109
_TYPICAL_FRAMES = 103                     # before the per-emotion factors; gives a median of ~109
DEFAULT_SEED = 2020
RAW_SUBDIR = "raw"
MARKER = ".synthetic.json"
# Bump when the generator changes, so ensure_default() regenerates data made by an older one.
GENERATOR_VERSION = 1
INTENSITY_MAX = 5.0                       # OpenFace caps AU intensities at 5

_AU = {name[:4]: i for i, name in enumerate(AU_INTENSITY)}   # "AU01" -> column index
_N_AU = len(AU_INTENSITY)

# Intensity each emotion adds on average over a clip (OpenFace scale, an average actor, normal
# intensity; the apex is higher for brief expressions). FACS prototypes, scaled to what OpenFace
# reports on RAVDESS (brow AUs 1/2/5 read low).
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "calm": {"AU12": 0.18, "AU06": 0.06, "AU07": 0.06},
    "happy": {"AU06": 0.69, "AU12": 1.14, "AU10": 0.54, "AU07": 0.33, "AU14": 0.21, "AU25": 0.09},
    "sad": {"AU01": 0.12, "AU04": 0.48, "AU15": 0.15, "AU17": 0.18, "AU07": 0.09},
    "angry": {"AU04": 0.60, "AU05": 0.03, "AU07": 0.39, "AU23": 0.15, "AU10": 0.21, "AU17": 0.12},
    "fear": {"AU01": 0.15, "AU02": 0.09, "AU04": 0.15, "AU05": 0.04, "AU07": 0.06, "AU20": 0.12,
             "AU26": 0.09},
    "surprise": {"AU01": 0.18, "AU02": 0.12, "AU05": 0.05, "AU26": 0.15},
    "disgust": {"AU04": 0.66, "AU07": 0.60, "AU09": 0.18, "AU10": 0.78, "AU06": 0.30, "AU15": 0.09,
                "AU17": 0.12},
}


@dataclass(frozen=True)
class Dynamics:
    """How an emotion unfolds in time; fractions are of the clip length, times in frames."""

    onset: float          # when the expression starts rising
    rise: float           # 10-90 % rise time
    apex_end: float       # when the offset starts
    decay: float          # offset time constant
    residual: float       # level the expression decays to (fraction of apex)
    tremor: float         # 7 Hz modulation depth on brow/lip-stretch AUs (fear)
    bursts: float         # speech-locked emphasis on brow/lid AUs (anger)
    speech_rate: float    # syllables per second
    speech_depth: float   # how much the mouth opens and closes per syllable
    blink_rate: float     # relative to the actor's rate
    blink_width: float    # blink duration scale


DYNAMICS: dict[str, Dynamics] = {
    "neutral": Dynamics(0.15, 10, 1.0, 20, 1.0, 0.0, 0.0, 4.2, 1.00, 1.00, 1.0),
    "calm": Dynamics(0.05, 45, 1.0, 20, 1.0, 0.0, 0.0, 3.5, 0.60, 0.75, 1.3),
    "happy": Dynamics(0.22, 12, 0.85, 20, 0.60, 0.0, 0.0, 4.2, 1.00, 1.00, 1.0),
    "sad": Dynamics(0.22, 40, 1.0, 30, 1.0, 0.0, 0.0, 3.6, 0.80, 0.85, 1.2),
    "angry": Dynamics(0.18, 4, 0.70, 10, 0.40, 0.0, 0.5, 4.6, 1.25, 1.00, 0.9),
    "fear": Dynamics(0.30, 22, 0.90, 25, 0.70, 0.45, 0.0, 4.6, 0.90, 1.40, 0.8),
    "surprise": Dynamics(0.10, 3, 0.35, 12, 0.15, 0.0, 0.0, 4.0, 1.00, 0.60, 1.0),
    "disgust": Dynamics(0.30, 8, 0.60, 15, 0.35, 0.0, 0.0, 3.8, 0.90, 1.00, 1.0),
}
# Clip length factors (real: neutral clips are the shortest, calm/angry/disgust the longest).
LENGTH_FACTOR = {"neutral": 0.95, "calm": 1.05, "happy": 1.00, "sad": 1.01, "angry": 1.05,
                 "fear": 0.99, "surprise": 0.97, "disgust": 1.05}
STRONG_GAIN = 1.45

# Resting activation: population mean and gamma shape (small shape = actors differ a lot).
_BASELINE = {"AU01": (0.03, 1.0), "AU02": (0.015, 1.0), "AU04": (0.80, 0.7), "AU05": (0.01, 2.0),
             "AU06": (0.20, 0.6), "AU07": (0.90, 0.7), "AU09": (0.02, 1.0), "AU10": (0.55, 0.7),
             "AU12": (0.30, 0.8), "AU14": (0.60, 0.6), "AU15": (0.05, 1.0), "AU17": (0.28, 1.5),
             "AU20": (0.04, 1.0), "AU23": (0.06, 0.8), "AU25": (0.10, 0.8), "AU26": (0.10, 1.0),
             "AU45": (0.08, 1.2)}
# Slow wander (AR(1) standard deviation) and frame-level sensor noise per AU.
_DRIFT = {"AU01": 0.08, "AU02": 0.06, "AU04": 0.16, "AU05": 0.04, "AU06": 0.12, "AU07": 0.30,
          "AU09": 0.06, "AU10": 0.22, "AU12": 0.18, "AU14": 0.20, "AU15": 0.09, "AU17": 0.22,
          "AU20": 0.09, "AU23": 0.10, "AU25": 0.20, "AU26": 0.18, "AU45": 0.10}
_SENSOR = {"AU01": 0.02, "AU02": 0.015, "AU04": 0.015, "AU05": 0.01, "AU06": 0.015, "AU07": 0.05,
           "AU09": 0.01, "AU10": 0.03, "AU12": 0.02, "AU14": 0.03, "AU15": 0.025, "AU17": 0.04,
           "AU20": 0.02, "AU23": 0.02, "AU25": 0.03, "AU26": 0.04, "AU45": 0.04}
# OpenFace presence is a separate classifier: P(present) rises around `threshold` with width
# `scale`; `actor_sd` is how much actors' presence bias differs (huge for AU05 in real data).
_PRESENCE = {"AU01": (0.55, 0.20, 0.8), "AU02": (0.45, 0.25, 0.8), "AU04": (0.80, 0.30, 1.0),
             "AU05": (0.60, 0.30, 3.5), "AU06": (0.50, 0.20, 0.8), "AU07": (1.10, 0.35, 1.0),
             "AU09": (0.75, 0.25, 0.6), "AU10": (0.70, 0.20, 0.8), "AU12": (0.65, 0.30, 0.8),
             "AU14": (0.55, 0.25, 1.0), "AU15": (0.50, 0.25, 0.8), "AU17": (0.80, 0.40, 1.0),
             "AU20": (0.55, 0.20, 0.8), "AU23": (1.60, 0.60, 0.6), "AU25": (1.00, 0.50, 0.8),
             "AU26": (1.10, 0.35, 0.8), "AU45": (0.55, 0.25, 0.8)}
_PRESENCE_BIAS_MEAN = {"AU05": 1.2}
# Syllable onsets of the two statements (fraction of the sentence), 7 syllables each:
# "Kids are talking by the door" / "Dogs are sitting by the door".
_SYLLABLES = {1: (0.0, 0.13, 0.27, 0.40, 0.58, 0.72, 0.86), 2: (0.0, 0.14, 0.28, 0.41, 0.57, 0.71, 0.85)}
_LOST_CLIP_RATE = 0.05       # share of clips with a short lost-tracking stretch
# Difficulty: how differently actors display an emotion, and how much clips of one actor vary.
_STYLE_SD = 0.65
_STYLE_LEAK = 0.45
_CLIP_GAIN_SD = 0.45
_ACTOR_EXPRESSIVENESS_SD = 0.65


class SyntheticDataError(ValueError):
    """A folder or argument the synthetic-data tools cannot use."""


def clip_names(actors: Iterable[int] = range(1, N_ACTORS + 1)) -> list[str]:
    """The 60 RAVDESS speech-clip stems of each actor (neutral has normal intensity only)."""
    names = []
    for actor in actors:
        if not 1 <= int(actor) <= N_ACTORS:
            raise SyntheticDataError(f"actor {actor!r} is out of range; RAVDESS actors are 1-{N_ACTORS}.")
        for emotion in EMOTIONS:
            for intensity in ((1,) if emotion == "neutral" else (1, 2)):
                for statement in (1, 2):
                    for repetition in (1, 2):
                        names.append(make_name(emotion, intensity, statement, repetition, int(actor)))
    return names


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))


@dataclass(frozen=True)
class _Actor:
    baseline: np.ndarray        # (17,) resting intensities
    expressiveness: float
    style: dict                 # emotion -> (17,) apex amplitudes for this actor
    presence_bias: np.ndarray   # (17,)
    lips: float                 # AU25 level while speaking
    jaw: float                  # AU26 level while speaking
    tempo: float                # speech-rate factor
    articulation: float         # syllable-depth factor
    blink_rate: float           # blinks per second
    blink_height: float
    onset_shift: float          # some actors show the expression before they speak
    length_factor: float
    pose: np.ndarray            # head position (mm) and rotation (rad)


def _vector(table: dict[str, float]) -> np.ndarray:
    out = np.zeros(_N_AU)
    for au, value in table.items():
        out[_AU[au]] = value
    return out


@functools.lru_cache(maxsize=256)
def _actor(seed: int, actor: int) -> _Actor:
    rng = _rng(seed, 0xAC7, actor)
    means = np.array([_BASELINE[au[:4]][0] for au in AU_INTENSITY])
    shapes = np.array([_BASELINE[au[:4]][1] for au in AU_INTENSITY])
    baseline = rng.gamma(shapes, means / shapes)
    expressiveness = float(rng.lognormal(0.0, _ACTOR_EXPRESSIVENESS_SD))
    style = {}
    for emotion in EMOTIONS:
        proto = _vector(PROTOTYPES[emotion])
        # Actors display each emotion their own way: reweighted prototype AUs, plus a little
        # of some other emotion's prototype mixed in.
        weights = rng.lognormal(0.0, _STYLE_SD, _N_AU)
        other = EMOTIONS[rng.integers(len(EMOTIONS))]
        style[emotion] = proto * weights + rng.uniform(0.0, _STYLE_LEAK) * _vector(PROTOTYPES[other])
    pres_sd = np.array([_PRESENCE[au[:4]][2] for au in AU_INTENSITY])
    pres_mean = np.array([_PRESENCE_BIAS_MEAN.get(au[:4], 0.0) for au in AU_INTENSITY])
    return _Actor(
        baseline=baseline,
        expressiveness=expressiveness,
        style=style,
        presence_bias=rng.normal(pres_mean, pres_sd),
        lips=float(rng.uniform(0.9, 2.2)),
        jaw=float(rng.uniform(0.6, 1.6)),
        tempo=float(rng.lognormal(0.0, 0.10)),
        articulation=float(rng.lognormal(0.0, 0.25)),
        blink_rate=float(rng.lognormal(np.log(0.43), 0.4)),
        blink_height=float(rng.uniform(1.5, 3.0)),
        onset_shift=float(rng.normal(0.0, 0.06)),
        length_factor=float(rng.lognormal(0.0, 0.04)),
        pose=np.array([rng.normal(0, 25), rng.normal(20, 20), rng.normal(620, 40),
                       rng.normal(0.1, 0.08), rng.normal(0, 0.08), rng.normal(0, 0.05)]),
    )


@functools.lru_cache(maxsize=512)
def _ar1_matrix(n: int, phi: float) -> np.ndarray:
    """Lower-triangular ``phi ** (i - j)``: maps innovations to an AR(1) series in one product."""
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.where(lag >= 0, phi ** np.maximum(lag, 0), 0.0)


def _ar1(rng: np.random.Generator, n: int, k: int, phi: float, sd: np.ndarray | float) -> np.ndarray:
    """(n, k) stationary AR(1) noise with lag-1 correlation ``phi`` and standard deviation ``sd``."""
    shocks = rng.standard_normal((n, k))
    shocks[1:] *= np.sqrt(1.0 - phi * phi)
    return (_ar1_matrix(n, phi) @ shocks) * sd


def _majority(flags: np.ndarray, window: int) -> np.ndarray:
    """Centred majority vote over ``window`` frames per column: removes one-frame flicker, as
    OpenFace's temporal smoothing of its presence predictions does."""
    half = window // 2
    padded = np.pad(flags.astype(float), ((half, half), (0, 0)), mode="edge")
    sums = np.cumsum(np.vstack([np.zeros((1, flags.shape[1])), padded]), axis=0)
    return (sums[window:] - sums[:-window]) > half


def _envelope(t: np.ndarray, n: int, dyn: Dynamics, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Onset-apex-offset time course, normalised to mean 1 so an average cannot see the timing."""
    onset = (dyn.onset + shift + rng.normal(0, 0.05)) * n
    rise = dyn.rise * rng.lognormal(0, 0.3)
    apex_end = max(onset + rise, (dyn.apex_end + rng.normal(0, 0.04)) * n)
    decay = dyn.decay * rng.lognormal(0, 0.2)
    up = 1.0 / (1.0 + np.exp(-(t - onset - rise / 2) * 4.4 / rise))
    down = np.where(t > apex_end, dyn.residual + (1 - dyn.residual) * np.exp(-(t - apex_end) / decay), 1.0)
    env = up * down
    return env / max(env.mean(), 1e-6)


def _speech(t: np.ndarray, n: int, clip: ClipName, rate: float, rng: np.random.Generator):
    """(gate, rhythm): where the actor speaks, and a zero-mean syllable rhythm inside it.

    The rhythm is zero-mean over the spoken part, so how fast and how deeply the mouth moves
    changes the clip's dynamics but not its average opening.
    """
    start = rng.uniform(0.14, 0.26) * n
    length = min(7 / rate * FPS * rng.lognormal(0, 0.08), n - start - 8)
    end = start + length
    gate = 1.0 / (1.0 + np.exp(-(t - start) / 2.0)) / (1.0 + np.exp((t - end) / 2.0))
    width = 0.28 * FPS / rate
    rhythm = np.zeros(n)
    for pos in _SYLLABLES[clip.statement]:
        centre = start + (pos + rng.normal(0, 0.015)) * length + width
        rhythm += rng.uniform(0.7, 1.3) * np.exp(-0.5 * ((t - centre) / (width / 1.6)) ** 2)
    inside = gate > 0.5
    rhythm = (rhythm - rhythm[inside].mean()) * gate
    return gate, rhythm


def _blinks(t: np.ndarray, n: int, rate: float, width_scale: float, height: float,
            rng: np.random.Generator) -> np.ndarray:
    count = rng.poisson(rate * n / FPS)
    out = np.zeros(n)
    for centre in rng.uniform(-2, n + 2, count):
        width = rng.uniform(1.3, 2.1) * width_scale
        out += height * rng.uniform(0.6, 1.15) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return out


def _clip_length(clip: ClipName, actor: _Actor, rng: np.random.Generator) -> int:
    factor = actor.length_factor * LENGTH_FACTOR[clip.emotion] * (1.02 if clip.intensity == 2 else 1.0)
    # Right-skewed like the real lengths: a few long takes, none much shorter than the median.
    n = _TYPICAL_FRAMES * factor * rng.lognormal(0, 0.065) + rng.exponential(4.0)
    return int(np.clip(round(n), MIN_FRAMES, MAX_FRAMES))


def _name_key(clip: ClipName) -> list[int]:
    return [clip.modality, clip.vocal_channel, clip.emotion_code, clip.intensity, clip.statement,
            clip.repetition, clip.actor]


def synthesize(name: str, seed: int = DEFAULT_SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """One clip's 35 AU columns (rounded like OpenFace) and its lost-tracking mask (True = face lost).

    ``name`` is a RAVDESS clip name; the result depends only on ``(seed, name)``.
    """
    clip = parse_name(name)
    actor = _actor(int(seed), clip.actor)
    rng = _rng(seed, *_name_key(clip))
    dyn = DYNAMICS[clip.emotion]
    n = _clip_length(clip, actor, rng)
    t = np.arange(n, dtype=float)

    base = actor.baseline * rng.lognormal(0, 0.15, _N_AU)
    x = base + _ar1(rng, n, _N_AU, 0.97, _vector(_DRIFT))

    gain = actor.expressiveness * (STRONG_GAIN if clip.intensity == 2 else 1.0) * rng.lognormal(0, _CLIP_GAIN_SD)
    amp = actor.style[clip.emotion] * gain * rng.lognormal(0, 0.15, _N_AU)
    env = _envelope(t, n, dyn, rng, actor.onset_shift)
    expression = env[:, None] * amp[None, :]
    gate, rhythm = _speech(t, n, clip, dyn.speech_rate * actor.tempo, rng)
    depth = dyn.speech_depth * actor.articulation
    if dyn.tremor:
        tremor = 1 + dyn.tremor * np.sin(2 * np.pi * 7.0 * t / FPS + rng.uniform(0, 2 * np.pi))
        for au in ("AU01", "AU02", "AU04", "AU20"):
            expression[:, _AU[au]] *= tremor
    if dyn.bursts:
        # Emphasis on the stressed syllables: brows and lids tighten in time with speech.
        for au in ("AU04", "AU07"):
            expression[:, _AU[au]] *= 1 + dyn.bursts * rhythm / max(np.abs(rhythm).max(), 1e-6)
    x += expression

    # Speaking: lips part (AU25) and the jaw drops (AU26) on each syllable; the upper lip lifts
    # and the chin relaxes while the mouth is open.
    x[:, _AU["AU25"]] += gate * actor.lips + 0.6 * rhythm * actor.lips * depth
    x[:, _AU["AU26"]] += gate * actor.jaw + rhythm * actor.jaw * depth
    x[:, _AU["AU10"]] += 0.10 * rhythm * depth
    x[:, _AU["AU17"]] += -0.25 * rhythm * depth
    blinks = _blinks(t, n, actor.blink_rate * dyn.blink_rate, dyn.blink_width, actor.blink_height, rng)
    x[:, _AU["AU45"]] += blinks
    x[:, _AU["AU07"]] += 0.15 * blinks  # OpenFace reads a little lid tightening into every blink

    intensity = np.clip(x + rng.standard_normal((n, _N_AU)) * _vector(_SENSOR), 0.0, INTENSITY_MAX)

    # Presence comes from its own classifier: it sees the signal before sensor noise and clipping,
    # with its own thresholds, actor and clip biases and slowly varying disagreement.
    thresholds = np.array([_PRESENCE[au[:4]][0] for au in AU_INTENSITY])
    scales = np.array([_PRESENCE[au[:4]][1] for au in AU_INTENSITY])
    score = ((x - thresholds) / scales + actor.presence_bias + rng.normal(0, 0.5, _N_AU)
             + _ar1(rng, n, _N_AU, 0.96, 0.8))
    on = _majority(score > 0, 3)
    presence = np.zeros((n, len(AU_PRESENCE)))
    for j, col in enumerate(AU_PRESENCE):
        if col == "AU28_c":
            continue  # lip suck: OpenFace almost never fires it on RAVDESS speech
        presence[:, j] = on[:, _AU[col[:4]]]

    values = np.round(np.hstack([intensity, presence]), 2)
    lost = np.zeros(n, dtype=bool)
    if rng.random() < _LOST_CLIP_RATE:
        start = int(rng.integers(1, n - 5))
        lost[start:start + int(rng.integers(1, 5))] = True
        values[lost] = 0.0
    return pd.DataFrame(values, columns=list(AU_COLUMNS)), lost


# Pre-formatted numbers: OpenFace values have two decimals and the processed files write them
# as Python floats ("0.0", "1.24"), the raw files as fixed two decimals ("0.00", "1.24").
_HUNDREDTHS = np.arange(int(INTENSITY_MAX * 100) + 1)
_PROCESSED_TEXT = np.array([repr(v / 100) for v in _HUNDREDTHS.tolist()], dtype=object)
_RAW_TEXT = np.array([f"{v / 100:.2f}" for v in _HUNDREDTHS], dtype=object)


def _format_rows(values: np.ndarray, table: np.ndarray, sep: str) -> list[str]:
    cells = table[np.rint(values * 100).astype(int)]
    return [sep.join(row) for row in cells.tolist()]


def _processed_text(frame: pd.DataFrame) -> str:
    lines = [PROCESSED_SEP.join(AU_COLUMNS)] + _format_rows(frame.to_numpy(), _PROCESSED_TEXT, PROCESSED_SEP)
    return "\n".join(lines) + "\n"


def _raw_text(frame: pd.DataFrame, lost: np.ndarray, name: str, seed: int) -> str:
    """OpenFace FeatureExtraction style: ``, ``-separated, header names with a leading space."""
    clip = parse_name(name)
    rng = _rng(seed, 0x5A3, *_name_key(clip))
    n = len(frame)
    pose = _actor(int(seed), clip.actor).pose + _ar1(rng, n, 6, 0.97, np.array([3, 3, 8, 0.03, 0.04, 0.02]))
    confidence = np.clip(0.98 - np.abs(rng.normal(0, 0.015, n)), 0, 1)
    confidence[lost], pose[lost] = 0.0, 0.0
    header = ["frame", "face_id", "timestamp", "confidence", "success",
              "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz", *AU_COLUMNS]
    aus = _format_rows(frame.to_numpy(), _RAW_TEXT, ", ")
    lines = [", ".join(header)]
    for i in range(n):
        lines.append(
            f"{i + 1}, 0, {i / FPS:.3f}, {confidence[i]:.2f}, {0 if lost[i] else 1}, "
            f"{pose[i, 0]:.1f}, {pose[i, 1]:.1f}, {pose[i, 2]:.1f}, "
            f"{pose[i, 3]:.3f}, {pose[i, 4]:.3f}, {pose[i, 5]:.3f}, {aus[i]}"
        )
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _marker(out_dir: Path) -> dict | None:
    """The seed and version recorded in ``out_dir``: None when nothing is recorded, ``{}`` when the
    record is unreadable (it then matches no seed, so the folder counts as made by another one)."""
    try:
        return json.loads((out_dir / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def generate(out_dir: str | os.PathLike, seed: int = DEFAULT_SEED, actors: Iterable[int] = range(1, N_ACTORS + 1),
             raw: bool = False, overwrite: bool = False) -> list[Path]:
    """Write the synthetic clips of ``actors`` as ``out_dir/<clip>.csv`` (processed format).

    ``raw=True`` also writes raw-OpenFace-style files to ``out_dir/raw/``. Existing files are left
    as they are unless ``overwrite=True`` (then they are regenerated). A small ``.synthetic.json``
    records the seed and generator version, so clips of two seeds are never mixed in one folder.
    Returns the processed-file paths, in clip order.
    """
    out_dir = paths.resolve(out_dir)
    actors = list(actors)
    if not actors:
        raise SyntheticDataError("actors is empty: name at least one actor (1-24).")
    names = clip_names(actors)
    wanted = {"seed": int(seed), "version": GENERATOR_VERSION}
    found = _marker(out_dir)
    if found is not None and found != wanted and not overwrite:
        made = (f"seed {found.get('seed')} (generator version {found.get('version')})" if found
                else f"an unknown seed ({MARKER} is unreadable)")
        raise SyntheticDataError(
            f"{out_dir} holds synthetic clips of {made}, not seed {seed} (version {GENERATOR_VERSION}); "
            "pass overwrite=True to regenerate them or choose another out_dir.")
    written = []
    for name in names:
        target = out_dir / f"{name}.csv"
        raw_target = out_dir / RAW_SUBDIR / f"{name}.csv"
        need_processed = overwrite or not target.exists()
        need_raw = raw and (overwrite or not raw_target.exists())
        if need_processed or need_raw:
            frame, lost = synthesize(name, seed)
            if need_processed:
                _write(target, _processed_text(frame))
            if need_raw:
                _write(raw_target, _raw_text(frame, lost, name, seed))
        written.append(target)
    if found != wanted:
        _write(out_dir / MARKER, json.dumps(wanted) + "\n")
    return written


def ensure_default(out_dir: str | os.PathLike | None = None, seed: int = DEFAULT_SEED) -> Path:
    """The folder of the full synthetic set (1440 clips; default :data:`paths.SYNTHETIC_DIR`), generated
    first if missing, incomplete, or made with another seed or generator version."""
    # Looked up at call time, so AUS_SYNTHETIC_DIR or a patched paths.SYNTHETIC_DIR is honoured.
    out_dir = paths.resolve(out_dir if out_dir is not None else paths.SYNTHETIC_DIR)
    stale = _marker(out_dir) != {"seed": int(seed), "version": GENERATOR_VERSION}
    if stale or not all((out_dir / f"{name}.csv").exists() for name in clip_names()):
        generate(out_dir, seed=seed, overwrite=stale)
    return out_dir


# ----------------------------------------------------------------------------------------------
# Calibration against real data


def _read_folder(folder: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """All AU clips in ``folder`` (``*.csv``, processed or raw OpenFace format), by clip stem."""
    folder = paths.resolve(folder)
    if not folder.is_dir():
        raise SyntheticDataError(f"{folder} is not a folder; give the folder holding the processed AU CSV files.")
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise SyntheticDataError(f"{folder} holds no *.csv files; generate some with synthetic.generate() "
                                 "or point to the folder of processed AU files.")
    return {path.stem: read_aus(path) for path in files}


def clip_means(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-clip average of the 35 AU columns, with ``emotion``, ``label`` and ``actor`` columns."""
    rows = []
    for stem, frame in _read_folder(data_dir).items():
        clip = parse_name(stem)
        rows.append({"clip": stem, "emotion": clip.emotion, "label": clip.label, "actor": clip.actor,
                     **frame.mean().to_dict()})
    return pd.DataFrame(rows).set_index("clip")


def _statistics(clips: dict[str, pd.DataFrame]) -> dict[tuple[str, str], float]:
    frames = pd.concat(clips.values(), ignore_index=True)
    steps = pd.concat([f.diff().abs().iloc[1:] for f in clips.values()], ignore_index=True)
    stats: dict[tuple[str, str], float] = {}
    for col in AU_PRESENCE:
        au = col[:4]
        r = f"{au}_r"
        if r in frames:
            stats[(au, "mean")] = frames[r].mean()
            stats[(au, "std")] = frames[r].std()
            stats[(au, "smoothness")] = steps[r].mean()
        stats[(au, "presence")] = frames[col].mean()
    lengths = np.array([len(f) for f in clips.values()])
    blinks = sum(int(((f["AU45_r"].to_numpy()[1:] >= 1) & (f["AU45_r"].to_numpy()[:-1] < 1)).sum())
                 for f in clips.values())
    stats[("clip", "frames_median")] = float(np.median(lengths))
    stats[("clip", "frames_min")] = float(lengths.min())
    stats[("clip", "frames_max")] = float(lengths.max())
    stats[("clip", "blinks_per_s")] = blinks / (lengths.sum() / FPS)
    stats[("clip", "lost_frame_share")] = float((frames.abs().sum(axis=1) == 0).mean())
    return stats


def compare_to_real(real_dir: str | os.PathLike, synthetic_dir: str | os.PathLike) -> pd.DataFrame:
    """Real vs synthetic statistics side by side.

    Rows are indexed by ``(feature, statistic)``: per AU the intensity ``mean``, ``std`` and
    ``smoothness`` (mean |x_t - x_{t-1}|) and the ``presence`` rate of its ``_c`` column; then clip-level
    rows (``frames_median/min/max``, ``blinks_per_s`` = AU45 rising through 1.0, ``lost_frame_share``).
    Use ``.unstack()`` for one row per AU.
    """
    real, synth = _statistics(_read_folder(real_dir)), _statistics(_read_folder(synthetic_dir))
    index = pd.MultiIndex.from_tuples(list(real), names=["feature", "statistic"])
    table = pd.DataFrame({"real": list(real.values()), "synthetic": [synth[k] for k in real]}, index=index)
    table["difference"] = table["synthetic"] - table["real"]
    return table


def plot_real_vs_synthetic(real_dir: str | os.PathLike, synthetic_dir: str | os.PathLike,
                           path: str | os.PathLike | None = None):
    """Per-AU mean intensity, presence rate and smoothness, and clip-length histograms, real vs synthetic."""
    from matplotlib.figure import Figure

    real_clips, synth_clips = _read_folder(real_dir), _read_folder(synthetic_dir)
    real, synth = _statistics(real_clips), _statistics(synth_clips)
    fig = Figure(figsize=(13, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    width = 0.4
    panels = [(axes[0, 0], "mean", [c[:4] for c in AU_INTENSITY], "mean intensity (0-5)"),
              (axes[0, 1], "presence", [c[:4] for c in AU_PRESENCE], "presence rate (share of frames)"),
              (axes[1, 0], "smoothness", [c[:4] for c in AU_INTENSITY], "mean |x[t] - x[t-1]|")]
    for ax, stat, aus, ylabel in panels:
        pos = np.arange(len(aus))
        ax.bar(pos - width / 2, [real[(au, stat)] for au in aus], width, label=f"real ({len(real_clips)} clips)")
        ax.bar(pos + width / 2, [synth[(au, stat)] for au in aus], width,
               label=f"synthetic ({len(synth_clips)} clips)")
        ax.set_xticks(pos, aus, rotation=60)
        ax.set_xlabel("action unit")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel.split(' (')[0]} per AU")
        ax.legend()
    ax = axes[1, 1]
    bins = np.arange(MIN_FRAMES - 0.5, MAX_FRAMES + 4.5, 4)
    ax.hist([len(f) for f in real_clips.values()], bins=bins, density=True, alpha=0.6, label="real")
    ax.hist([len(f) for f in synth_clips.values()], bins=bins, density=True, alpha=0.6, label="synthetic")
    ax.set_xlabel("clip length (frames at 30 fps)")
    ax.set_ylabel("density")
    ax.set_title("clip lengths")
    ax.legend()
    fig.suptitle("Real RAVDESS vs synthetic AU statistics")
    if path is not None:
        path = paths.resolve(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return fig
