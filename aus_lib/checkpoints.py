"""Loading a trained fold's model, and what a checkpoint must match to be used.

Training writes ``fold_<k>/checkpoint.pt`` (a plain dict: weights, params, labels, fold, the
fold's input scaling, the data fingerprint); inference and the resume checks read it here,
without importing the training code.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from aus_lib.config import build_config
from aus_lib.dataset import ClipData
from aus_lib.model import Sequence1Modal, lengths_to_mask
from aus_lib.ravdess import LABELS

# Settings that may change when a run is resumed: where it runs, not what it computes.
RESUMABLE_CHANGES = ("device", "num_threads")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model it describes."""


def differences(old: Mapping, new: Mapping) -> list[str]:
    """Keys whose values differ, ignoring :data:`RESUMABLE_CHANGES`."""
    return sorted(key for key in set(old) | set(new)
                  if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key))


def data_fingerprint(data: ClipData) -> str:
    """A digest of what a model sees: clip names, labels, actors and every AU value, so that a
    checkpoint or a training state is never used with data other than what made it."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update("\n".join(data.names).encode())
    for array in (data.lengths, data.labels, data.actors):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for i in range(len(data)):  # clip by clip: the padding depends on which clips are together
        digest.update(np.ascontiguousarray(data.clip(i), dtype=np.float32).tobytes())
    return digest.hexdigest()

def apply_normalization(features: torch.Tensor, lengths: torch.Tensor, normalization: dict | None) -> torch.Tensor:
    """features[N, T, F] scaled with a checkpoint's ``normalization``; padding stays 0."""
    if normalization is None:
        return features
    mean = normalization["mean"].to(features.device)
    scale = normalization["scale"].to(features.device)
    mask = lengths_to_mask(lengths.to(features.device), features.size(1)).unsqueeze(2)
    return ((features - mean) / scale).masked_fill(~mask, 0.0)

def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    packed: bool = False) -> tuple[Sequence1Modal, dict]:
    """(model in eval mode, checkpoint dict) of a ``checkpoint.pt``; the architecture comes from its params.

    ``packed`` chooses the encoder path; both give the same outputs, the masked one
    (``packed=False``) is the faster.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if "members" in checkpoint:
        raise CheckpointError(f"{path} is the index of an ensemble of {len(checkpoint['members'])} models "
                              "(final_fit='ensemble'): load its members with aus_lib.inference.fold_models.")
    missing = [key for key in ("model", "params", "labels") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} lacks key(s) {missing}; it is not a checkpoint written by aus_lib training.")
    if list(checkpoint["labels"]) != list(LABELS):
        raise CheckpointError(f"{path} uses labels {checkpoint['labels']}, expected {list(LABELS)}.")
    cfg = build_config(checkpoint["params"], where=f"{path} (params)")
    model = Sequence1Modal(cfg.model_config(), packed=packed)
    expected, found = model.state_dict(), checkpoint["model"]
    problems = [f"{key}: missing" for key in expected if key not in found]
    problems += [f"{key}: unexpected" for key in found if key not in expected]
    problems += [f"{key}: checkpoint {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}"
                 for key in expected if key in found and found[key].shape != expected[key].shape]
    if problems:
        raise CheckpointError(f"{path}: the weights do not fit the model its params describe:\n  "
                              + "\n  ".join(problems))
    model.load_state_dict(found)
    return model.to(device).eval(), checkpoint
