"""The one configuration object: a params JSON file (the original sequenceLearning schema)
plus the overrides a notebook's parameters carry, validated once.

Precedence, lowest first: the defaults below < the JSON file < the notebook's defaults
< values injected by papermill (``-p``/``-y``/``-f``). Notebooks pass their parameters as
``overrides``; ``None`` means "keep the file's value".
"""
from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aus_lib.paths import PARAMS_DIR, resolve


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the key and file."""


# --- the schema: every key once, with its type, default and rule -------------------------------
# A key without a default is required: the original schema has it and a file without it is
# refused; the keys with defaults are this project's additions (or optional in the original).

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Encoder(_Section):
    dim: int = Field(gt=0)
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    bidirectional: bool


class Attention(_Section):
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    activation: Literal["tanh", "relu"]
    context: bool = False
    input_stats: bool = False


class ModelParams(_Section):
    encoder: Encoder
    attention: Attention


class Params(_Section):
    """A params file in the original sequenceLearning schema, plus this project's keys."""

    # the original schema
    name: str
    data_type: Literal["pathCSV"] = "pathCSV"
    model_name: Literal["Sequence1Modal"]
    input_size: int
    model_params: ModelParams
    preprocessor: Literal["standard", "minmax"] | None = None
    batch_size: int = Field(ge=1)
    # Clips per forward/backward pass within a batch (gradients summed, one optimizer step per batch; the same
    # dropout masks): "auto" = aus_lib.fold.AUTO_MICRO_BATCH on the CPU, whole batches on a GPU; null = whole batches.
    micro_batch: Literal["auto"] | int | None = "auto"
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int
    min_change: float = Field(0.0, ge=0)
    epochs: int = Field(ge=1)
    base: float = 0.0
    clip_norm: float = Field(1.0, gt=0)
    seed: int = Field(ge=0)
    disable_cache: bool = True
    # the posteriors schema (RAVDESS_AUs_posteriors.json)
    inference_data: Literal["train", "val", "all"] | None = None
    OUT_PATH: str | None = None
    TRAINED_PATH: str | None = None
    # this project's additions
    kfolds: int = Field(5, ge=2)
    selection: Literal["test_fold", "inner"] = "test_fold"
    inner_val_actors: Literal["auto"] | int = "auto"
    final_fit: Literal["inner", "refit", "ensemble"] = "inner"
    ensemble_size: int = Field(5, ge=2)
    actor_normalization: Literal["zscore", "robust"] | None = None
    device: str = "auto"
    deterministic: bool = False
    engine: Literal["plain", "batched", "stacked"] = "batched"
    num_threads: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        # The name becomes part of file names (posterior files): a path in it would write elsewhere.
        if name in ("", ".", "..") or any(c in name for c in "/\\") or ".." in name:
            raise ValueError("must be a plain file name, without '/', '\\' or '..'")
        return name

    @field_validator("input_size")
    @classmethod
    def _known_au_set(cls, size: int) -> int:
        if size not in (35, 20):
            raise ValueError("must be 35 (OpenFace: 17 AU intensities + 18 presences) or 20 (py-feat AU "
                             "probabilities); training sets it from the data")
        return size

    @field_validator("micro_batch")
    @classmethod
    def _micro_batch(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value < 1:
            raise ValueError('must be "auto", null (whole batches) or an integer >= 1')
        return value

    @field_validator("patience")
    @classmethod
    def _patience(cls, patience: int) -> int:
        if patience != -1 and patience < 1:
            raise ValueError("must be >= 1, or -1 to disable early stopping")
        return patience

    @field_validator("inner_val_actors")
    @classmethod
    def _inner_val_actors(cls, value: str | int) -> str | int:
        if value != "auto" and value < 1:
            raise ValueError('must be "auto" or an integer >= 1')
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not (device in ("auto", "cpu") or device.startswith("cuda")):
            raise ValueError("must be 'auto', 'cpu' or 'cuda[:N]'")
        return device

    @model_validator(mode="after")
    def _refit_needs_inner_selection(self) -> Params:
        if self.final_fit != "inner" and self.selection != "inner":
            raise ValueError(f"final_fit={json.dumps(self.final_fit)} needs selection=\"inner\" (a refit on the training "
                             "part must not include the test fold used for selection)")
        return self


# Config's flat names of the nested model keys: the file nests them, the code reads them flat.
_NESTED = {"encoder_dim": ("encoder", "dim"), "encoder_layers": ("encoder", "layers"),
           "encoder_dropout": ("encoder", "dropout"), "bidirectional": ("encoder", "bidirectional"),
           "attention_layers": ("attention", "layers"), "attention_dropout": ("attention", "dropout"),
           "attention_activation": ("attention", "activation"), "attention_context": ("attention", "context"),
           "attention_input_stats": ("attention", "input_stats")}


class Config:
    """Everything a run needs to know: validated :class:`Params`, read with flat names
    (``cfg.lr``, ``cfg.encoder_dim`` = ``model_params.encoder.dim``), and where they came from."""

    __slots__ = ("params", "source")

    def __init__(self, params: Params, source: str | None = None) -> None:
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "source", source)

    def __getattr__(self, name: str):
        if name in _NESTED:
            part, key = _NESTED[name]
            return getattr(getattr(self.params.model_params, part), key)
        if name in Params.model_fields and name != "model_params":
            return getattr(self.params, name)
        raise AttributeError(f"Config has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"Config is frozen: use cfg.replace({name}=...)")

    def __reduce__(self):  # copy and pickle rebuild it through __init__ (__setattr__ refuses)
        return (Config, (self.params, self.source))

    def __eq__(self, other) -> bool:  # where the values came from does not make another config
        return isinstance(other, Config) and self.params == other.params

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_params(), sort_keys=True))

    def __repr__(self) -> str:
        return f"Config({self.to_params()!r}, source={self.source!r})"

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` (flat names, as read), validated again."""
        dotted = {"model_params.{}.{}".format(*_NESTED[k]) if k in _NESTED else k: v for k, v in changes.items()}
        return build_config(with_values(self.to_params(), dotted, str(self.source)), self.source)

    def to_params(self) -> dict:
        """The config in the original nested JSON schema (plus this project's keys)."""
        return self.params.model_dump()

    def model_config(self):
        from aus_lib.model import ModelConfig  # deferred: reading a config needs no torch

        return ModelConfig(input_size=self.input_size, **{name: getattr(self, name) for name in _NESTED})

    @property
    def selection_note(self) -> str:
        if self.selection == "test_fold":
            return ("selection='test_fold' (as the original code and the paper): early stopping and the checkpoint are "
                    "chosen on the held-out test fold, so the reported accuracy is optimistic. Use selection='inner' "
                    "for an unbiased estimate.")
        held = ("about a fifth of the training actors (at least 1, leaving at least 2 to train on; with a single "
                "training actor, a fifth of its clips)" if self.inner_val_actors == "auto"
                else f"{self.inner_val_actors} training actor(s)")
        fit = {"inner": "",
               "refit": " The model is then refit on all training actors for the chosen number of epochs.",
               "ensemble": f" {self.ensemble_size} such models per fold, each with its own inner validation draw and "
                           "seed, average their posteriors."}[self.final_fit]
        norm = (f" Features are {self.actor_normalization}-normalized per actor (label-free statistics of each "
                "actor's own clips)." if self.actor_normalization else "")
        return (f"selection='inner': {held} per fold are held out for early stopping and checkpoint choice; the test "
                f"fold is used only for the final evaluation.{fit}{norm}")


# Keys added after runs were made: the value a run made before had in effect, and what that meant. Such a run,
# training state or study lacks the key, so it differs from today's default; the refusal says how to continue it.
ADDED_KEYS = {"micro_batch": ("null", "trained whole batches")}


def resume_hint(old: Mapping, diffs: Iterable[str]) -> str:
    """``"; <advice>"`` for each key of ``diffs`` that the saved config ``old`` predates, else ``""``."""
    diffs = set(diffs)
    notes = [f'it predates {key} and {meaning}: set "{key}": {value} in the params file to continue it'
             for key, (value, meaning) in ADDED_KEYS.items() if key in diffs and key not in old]
    return "".join(f"; {note}" for note in notes)


# --- loading -------------------------------------------------------------------------------

def _comment_line(text: str) -> int | None:
    """The line of the first ``//`` or ``/*`` outside a JSON string, if any."""
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            in_string, escaped = (escaped or ch != '"'), (ch == "\\" and not escaped)
        elif ch == '"':
            in_string = True
        elif ch == "/" and text[i + 1:i + 2] in ("/", "*"):
            return text.count("\n", 0, i) + 1
    return None


def _refuse_duplicates(path: Path, text: str):
    """An ``object_pairs_hook`` for json.loads: a key given twice is an error, not "the last wins"."""
    def hook(pairs):
        keys = [k for k, _ in pairs]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(rf'"{re.escape(twice)}"\s*:', text)]
            where = f" (lines {', '.join(map(str, lines))})" if len(lines) > 1 else ""
            raise ConfigError(f"{path}: key {twice!r} is given twice{where}; JSON readers silently keep the last "
                              "value, so delete the one you do not mean.")
        return dict(pairs)
    return hook


def read_params_file(path: str | os.PathLike) -> dict:
    """Parse a params JSON file; invalid JSON is reported with its line and column, comments and
    duplicate keys by name and line. A UTF-8 byte order mark is accepted."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Params file {path} does not exist (relative paths start at the current folder, "
                          f"{Path.cwd()}). Files shipped with the project are in {PARAMS_DIR}.")
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates(path, text))
    except json.JSONDecodeError as exc:
        comment = _comment_line(text)
        if comment is not None:
            raise ConfigError(f"{path}, line {comment}: comments (// or /* */) are not JSON, so the file "
                              "cannot be read: delete the comment.") from exc
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object.")
    return data


def _merge(base: dict, overrides: Mapping, where: str, skip_none: bool = True) -> dict:
    """Merge overrides into params; nested dicts merge, dotted keys ("model_params.encoder.dim") work.
    ``skip_none``: a None value keeps the base's value (a notebook default) instead of setting null."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None and skip_none:
            continue
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: cannot set {key!r}: {p!r} is not an object.")
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value, where, skip_none)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def with_values(params: Mapping, values: Mapping, where: str = "<params>") -> dict:
    """``params`` with ``values`` set (top-level or dotted keys); unlike notebook overrides, None sets null."""
    return _merge(dict(params), values, where, skip_none=False)


def build_config(params: Mapping, where: str = "<params>") -> Config:
    """Validate ``params`` (the original nested schema); every problem is named with its full key path and ``where``."""
    try:
        return Config(Params.model_validate(dict(params)), source=where)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_problem(error) for error in exc.errors()))
        raise ConfigError(f"{where}: " + "; ".join(problems) + ".") from None


_TYPE_NAMES = {"int_type": "an integer", "float_type": "a number", "bool_type": "true/false",
               "string_type": "a string", "model_type": "an object", "dict_type": "an object"}


def _problem(error: Mapping) -> str:
    """One pydantic error as a sentence naming the key path (``model_params.encoder.dim``)."""
    fields, model = [], Params
    for part in error["loc"]:  # union members add their own tags to the location: stop at them
        if not (isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields) \
                and error["type"] != "extra_forbidden":
            break
        fields.append(str(part))
        info = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        model = info.annotation if info is not None else None
    key = ".".join(fields)
    value = error.get("input")
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    if error["type"] == "extra_forbidden":
        parent = ".".join(fields[:-1])
        known = _section(parent).model_fields
        prefix = parent + "." if parent else ""
        return f"unknown key {key!r}; known keys are {', '.join(prefix + k for k in known)}. Check the spelling"
    if error["type"] in _TYPE_NAMES and len(fields) == len(error["loc"]):
        return f"key {key!r} must be {_TYPE_NAMES[error['type']]}, got {json.dumps(value, default=str)}"
    if error["type"] == "literal_error":
        return f"{key}={json.dumps(value, default=str)} is not one of {error['ctx']['expected']}"
    rule = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return f"{key}={json.dumps(value, default=str)} {rule}" if key else rule


def _section(path: str) -> type[BaseModel]:
    model: type[BaseModel] = Params
    for part in filter(None, path.split(".")):
        model = model.model_fields[part].annotation
    return model


def load_config(params_file: str | os.PathLike = PARAMS_DIR / "RAVDESS_AUs.json", overrides: Mapping | None = None,
                *, posteriors: bool = False) -> Config:
    """Read, merge and validate. ``overrides`` holds notebook parameters: flat top-level keys
    (``epochs``, ``kfolds``...), dotted keys (``"model_params.encoder.dim"``) or nested dicts;
    ``None`` values are skipped. ``posteriors=True`` also requires the posteriors keys."""
    path = resolve(params_file)
    params = read_params_file(path)
    where = str(path)
    if overrides:
        params = _merge(params, overrides, f"{where} (with notebook overrides)")
        where = f"{where} (with notebook overrides {sorted(k for k, v in overrides.items() if v is not None)})"
    if posteriors:
        for key in ("inference_data", "OUT_PATH", "TRAINED_PATH"):
            if key not in params:
                raise ConfigError(f"{where}: missing required key {key!r} (a posteriors params file needs "
                                  "inference_data, OUT_PATH and TRAINED_PATH).")
    return build_config(params, where)


def describe(cfg: Config) -> str:
    """The resolved config as the notebooks print it at the top."""
    lines = [f"Config from {cfg.source}"]
    lines += [f"  {k:<20} {json.dumps(v)}" for k, v in cfg.to_params().items() if k != "model_params"]
    mp = cfg.to_params()["model_params"]
    lines += [f"  model_params.{part:<7} {json.dumps(mp[part])}" for part in mp]
    lines.append("  note: " + cfg.selection_note)
    return "\n".join(lines)
