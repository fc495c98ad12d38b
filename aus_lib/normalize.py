"""Per-actor (speaker) normalization of AU features: label-free, one actor at a time.

Faces differ more between people than between emotions: one actor's resting AU04 is another's
frown. Speaker normalization, standard in emotion recognition, removes that by rescaling every
AU column with statistics of the actor's own clips. It reads no labels, so it is allowed for
test actors too: a test actor's statistics come from its own clips (all of them, as a deployed
system would after seeing a few clips of a new person), never from other actors.

Kinds (config key ``actor_normalization``):

* ``None``: none (the paper);
* ``"zscore"``: per actor and column, ``(x - mean) / std`` over all frames of the actor's clips;
* ``"robust"``: per actor and column, ``(x - median) / IQR`` (less moved by tracking glitches).

A column that is constant for an actor (an AU that never fires) keeps scale 1: it is centred,
not blown up. For a clip of an actor the statistics do not know, :func:`normalize_clips` takes
the statistics from the clips it is given of that actor; a single clip is normalized with its
own statistics, which removes that clip's mean expression too: give several clips of a person
where you can.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

KINDS = (None, "zscore", "robust")
ACTOR_STATS_FILE = "actor_normalization.json"  # a run's per-actor statistics, in its folder


class NormalizationError(ValueError):
    """An unknown kind, or statistics that do not fit the data."""


def check_kind(kind: str | None) -> str | None:
    if kind not in KINDS:
        raise NormalizationError(f"actor_normalization={kind!r}: use one of {list(KINDS)} (null = none).")
    return kind


def frame_statistics(frames: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) per column of ``frames[n, F]`` for ``kind``; a zero scale becomes 1."""
    check_kind(kind)
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or len(frames) == 0:
        raise NormalizationError(f"need a non-empty [frames, features] array, got shape {frames.shape}.")
    if kind == "zscore":
        centre, scale = frames.mean(0), frames.std(0)
    else:
        q25, centre, q75 = np.percentile(frames, [25, 50, 75], axis=0)
        scale = q75 - q25
        # An AU that is zero in most frames has IQR 0 but still moves: fall back to its std.
        scale = np.where(scale > 0, scale, frames.std(0))
    scale = np.where(scale > 1e-8, scale, 1.0)
    return centre, scale


def actor_statistics(frames_by_actor: Mapping[int, Sequence[np.ndarray]], kind: str) -> dict[int, dict]:
    """Per actor: ``{"centre": [F], "scale": [F], "clips": n, "frames": n}`` over all its clips' frames."""
    stats = {}
    for actor, clips in frames_by_actor.items():
        clips = list(clips)
        if not clips:
            raise NormalizationError(f"actor {actor} has no clips to compute statistics from.")
        centre, scale = frame_statistics(np.concatenate(clips), kind)
        stats[int(actor)] = {"centre": centre, "scale": scale, "clips": len(clips),
                             "frames": int(sum(len(c) for c in clips))}
    return stats


def statistics_of(data, kind: str) -> dict[int, dict]:
    """Per-actor statistics of a :class:`aus_lib.dataset.ClipData` (real frames only, no labels)."""
    by_actor: dict[int, list[np.ndarray]] = {}
    for i, actor in enumerate(np.asarray(data.actors).tolist()):
        by_actor.setdefault(int(actor), []).append(data.clip(i))
    return actor_statistics(by_actor, kind)


def normalize_data(data, kind: str | None, stats: Mapping[int, Mapping] | None = None):
    """A copy of ``data`` (ClipData) with each clip scaled by its actor's statistics; padding stays 0.

    ``stats`` defaults to :func:`statistics_of` ``(data, kind)``; given (e.g. saved with a run),
    every actor of ``data`` must be in it. ``kind=None`` returns ``data`` unchanged.
    """
    if check_kind(kind) is None:
        return data
    stats = statistics_of(data, kind) if stats is None else stats
    missing = sorted({int(a) for a in data.actors} - {int(a) for a in stats})
    if missing:
        raise NormalizationError(f"no {kind} statistics for actor(s) {missing}; compute them from those actors' "
                                 "clips (normalize_data(data, kind) without stats).")
    features = np.zeros_like(data.features)
    for i, actor in enumerate(np.asarray(data.actors).tolist()):
        s = stats[int(actor)]
        n = int(data.lengths[i])
        features[i, :n] = (data.features[i, :n] - np.asarray(s["centre"])) / np.asarray(s["scale"])
    return type(data)(list(data.names), features.astype(np.float32), data.lengths.copy(), data.labels.copy(),
                      data.actors.copy(), data.columns)


def normalize_clips(clips: Mapping[str, np.ndarray], actors: Mapping[str, int | None],
                    kind: str | None) -> dict[str, np.ndarray]:
    """Normalize loose clips (name -> frames[n, F]) for prediction.

    Clips of the same actor (``actors[name]``; None = unknown) share that actor's statistics,
    computed from these clips; a clip of an unknown actor uses its own statistics (with a warning).
    """
    if check_kind(kind) is None:
        return dict(clips)
    groups: dict[object, list[str]] = {}
    for name in clips:
        actor = actors.get(name)
        groups.setdefault(("actor", actor) if actor is not None else ("clip", name), []).append(name)
    lone = [key[1] for key, names in groups.items() if len(names) == 1]
    if lone:
        warnings.warn(f"{kind} actor normalization of {len(lone)} clip(s) with no other clip of the same actor "
                      f"({', '.join(map(str, lone[:3]))}{'...' if len(lone) > 3 else ''}): each is normalized with its "
                      "own statistics, which also removes its average expression. Give several clips of a person "
                      "(named with the RAVDESS actor field) for the statistics the model was trained with.",
                      stacklevel=2)
    out = {}
    for names in groups.values():
        centre, scale = frame_statistics(np.concatenate([clips[n] for n in names]), kind)
        for n in names:
            out[n] = ((clips[n] - centre) / scale).astype(np.float32)
    return out


def normalize_table(table: pd.DataFrame, columns: Iterable[str], actors: Sequence[int] | np.ndarray,
                    kind: str | None) -> pd.DataFrame:
    """Per-actor normalization of a per-clip table (e.g. averaged AUs): each column rescaled by
    the statistics of that actor's rows. Returns a copy; other columns are untouched."""
    if check_kind(kind) is None:
        return table
    columns = list(columns)
    actors = np.asarray(actors)
    if len(actors) != len(table):
        raise NormalizationError(f"{len(actors)} actor ids for a table of {len(table)} rows.")
    out = table.copy()
    values = out[columns].to_numpy(dtype=np.float64, copy=True)
    for actor in np.unique(actors):
        rows = actors == actor
        centre, scale = frame_statistics(values[rows], kind)
        values[rows] = (values[rows] - centre) / scale
    out[columns] = values
    return out


def statistics_to_json(stats: Mapping[int, Mapping], kind: str, columns: Sequence[str]) -> dict:
    """A JSON-ready record of per-actor statistics (saved with a run for inference and provenance)."""
    return {"kind": kind, "columns": list(columns),
            # Unrounded: JSON keeps float64 exactly, so inference rebuilds training's inputs bit for bit.
            "actors": {str(a): {"centre": np.asarray(s["centre"], dtype=np.float64).tolist(),
                                "scale": np.asarray(s["scale"], dtype=np.float64).tolist(),
                                "clips": int(s["clips"]), "frames": int(s["frames"])} for a, s in stats.items()}}


def statistics_from_json(record: Mapping) -> tuple[str, dict[int, dict]]:
    """(kind, per-actor statistics) of :func:`statistics_to_json`'s record."""
    try:
        kind = check_kind(record["kind"])
        stats = {int(a): {"centre": np.asarray(s["centre"], dtype=np.float64),
                          "scale": np.asarray(s["scale"], dtype=np.float64),
                          "clips": int(s["clips"]), "frames": int(s["frames"])}
                 for a, s in record["actors"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise NormalizationError(f"not a record of actor statistics ({exc}).") from None
    return kind, stats
