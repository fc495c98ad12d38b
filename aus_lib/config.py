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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from aus_lib.paths import PARAMS_DIR, resolve


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the key and file."""


# --- the schema ----------------------------------------------------------------------------
# key -> (type(s), default). A default of REQUIRED means the original schema has the key and
# a file without it is refused; the others are this project's additions, optional.
REQUIRED = object()
_NUM = (int, float)

ENCODER_SCHEMA = {"dim": (int, REQUIRED), "layers": (int, REQUIRED), "dropout": (_NUM, REQUIRED),
                  "bidirectional": (bool, REQUIRED)}
ATTENTION_SCHEMA = {"layers": (int, REQUIRED), "dropout": (_NUM, REQUIRED), "activation": (str, REQUIRED),
                    "context": (bool, False), "input_stats": (bool, False)}
TOP_SCHEMA: dict[str, tuple[Any, Any]] = {
    # the original schema
    "name": (str, REQUIRED),
    "data_type": (str, "pathCSV"),
    "model_name": (str, REQUIRED),
    "input_size": (int, REQUIRED),
    "model_params": (dict, REQUIRED),
    "preprocessor": ((str, type(None)), None),
    "batch_size": (int, REQUIRED),
    "lr": (_NUM, REQUIRED),
    "weight_decay": (_NUM, 0.0),
    "patience": (int, REQUIRED),
    "min_change": (_NUM, 0.0),
    "epochs": (int, REQUIRED),
    "base": (_NUM, 0.0),
    "clip_norm": (_NUM, 1.0),
    "seed": (int, REQUIRED),
    "disable_cache": (bool, True),
    # the posteriors schema (RAVDESS_AUs_posteriors.json)
    "inference_data": ((str, type(None)), None),
    "OUT_PATH": ((str, type(None)), None),
    "TRAINED_PATH": ((str, type(None)), None),
    # this project's additions
    "kfolds": (int, 5),
    "selection": (str, "test_fold"),
    "inner_val_actors": ((int, str), "auto"),
    "final_fit": (str, "inner"),
    "ensemble_size": (int, 5),
    "actor_normalization": ((str, type(None)), None),
    "device": (str, "auto"),
    "deterministic": (bool, False),
    "engine": (str, "batched"),
    "num_threads": ((int, type(None)), None),
}
CHOICES = {
    "selection": ("test_fold", "inner"),
    "final_fit": ("inner", "refit", "ensemble"),
    "actor_normalization": (None, "zscore", "robust"),
    "preprocessor": (None, "standard", "minmax"),
    "engine": ("plain", "batched", "stacked"),
    "inference_data": (None, "train", "val", "all"),
    "model_name": ("Sequence1Modal",),
    "data_type": ("pathCSV",),
    "activation": ("tanh", "relu"),
}


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know. Field names follow the original JSON schema."""

    name: str
    model_name: str
    input_size: int
    encoder_dim: int
    encoder_layers: int
    encoder_dropout: float
    bidirectional: bool
    attention_layers: int
    attention_dropout: float
    attention_activation: str
    attention_context: bool
    attention_input_stats: bool
    batch_size: int
    lr: float
    patience: int
    epochs: int
    seed: int
    data_type: str = "pathCSV"
    preprocessor: str | None = None
    weight_decay: float = 0.0
    min_change: float = 0.0
    base: float = 0.0
    clip_norm: float = 1.0
    disable_cache: bool = True
    inference_data: str | None = None
    OUT_PATH: str | None = None
    TRAINED_PATH: str | None = None
    kfolds: int = 5
    selection: str = "test_fold"
    inner_val_actors: int | str = "auto"
    final_fit: str = "inner"
    ensemble_size: int = 5
    actor_normalization: str | None = None
    device: str = "auto"
    deterministic: bool = False
    engine: str = "batched"
    num_threads: int | None = None
    source: str | None = field(default=None, compare=False)

    def to_params(self) -> dict:
        """The config in the original nested JSON schema (plus this project's keys)."""
        flat = asdict(self)
        flat.pop("source")
        out = {k: flat.pop(k) for k in list(flat) if not k.startswith(("encoder_", "attention_")) and k != "bidirectional"}
        out["model_params"] = {
            "encoder": {"dim": self.encoder_dim, "layers": self.encoder_layers, "dropout": self.encoder_dropout,
                        "bidirectional": self.bidirectional},
            "attention": {"layers": self.attention_layers, "dropout": self.attention_dropout,
                          "activation": self.attention_activation, "context": self.attention_context,
                          "input_stats": self.attention_input_stats},
        }
        return out

    def model_config(self):
        from aus_lib.model import ModelConfig

        return ModelConfig(
            input_size=self.input_size, encoder_dim=self.encoder_dim, encoder_layers=self.encoder_layers,
            encoder_dropout=self.encoder_dropout, bidirectional=self.bidirectional,
            attention_layers=self.attention_layers, attention_dropout=self.attention_dropout,
            attention_activation=self.attention_activation, attention_context=self.attention_context,
            attention_input_stats=self.attention_input_stats,
        )

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


# --- loading -------------------------------------------------------------------------------

def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", dict: "object", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(x, x.__name__) for x in ts))


def _check_type(key: str, value, expected, where: str):
    ts = expected if isinstance(expected, tuple) else (expected,)
    # JSON true/false are Python bools, which are ints too: refuse them where a number is meant.
    if isinstance(value, bool) and bool not in ts:
        ok = False
    else:
        ok = isinstance(value, ts)
    if not ok:
        raise ConfigError(f"{where}: key {key!r} must be {_type_name(expected)}, got {json.dumps(value)}.")
    if float in ts and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_section(section: Mapping, schema: Mapping, where: str, prefix: str) -> dict:
    unknown = sorted(set(section) - set(schema))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; known keys are "
                          f"{', '.join(prefix + k for k in schema)}. Check the spelling.")
    out = {}
    for key, (typ, default) in schema.items():
        if key not in section:
            if default is REQUIRED:
                raise ConfigError(f"{where}: missing required key {prefix + key!r}.")
            out[key] = default
            continue
        out[key] = _check_type(prefix + key, section[key], typ, where)
    return out


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
    top = _check_section(params, TOP_SCHEMA, where, "")
    mp = top["model_params"]
    _check_section(mp, {"encoder": (dict, REQUIRED), "attention": (dict, REQUIRED)}, where, "model_params.")
    enc = _check_section(mp["encoder"], ENCODER_SCHEMA, where, "model_params.encoder.")
    att = _check_section(mp["attention"], ATTENTION_SCHEMA, where, "model_params.attention.")
    for key, choices in CHOICES.items():
        value = att.get(key) if key == "activation" else top.get(key)
        if value not in choices:
            shown = "model_params.attention.activation" if key == "activation" else key
            raise ConfigError(f"{where}: {shown}={json.dumps(value)} is not one of {list(choices)}.")
    checks = [
        (top["input_size"] in (35, 20), "input_size",
         "must be 35 (OpenFace: 17 AU intensities + 18 presences) or 20 (py-feat AU probabilities); "
         "training sets it from the data"),
        (enc["dim"] > 0, "model_params.encoder.dim", "must be > 0"),
        (enc["layers"] >= 1, "model_params.encoder.layers", "must be >= 1"),
        (0 <= enc["dropout"] < 1, "model_params.encoder.dropout", "must be in [0, 1)"),
        (att["layers"] >= 1, "model_params.attention.layers", "must be >= 1"),
        (0 <= att["dropout"] < 1, "model_params.attention.dropout", "must be in [0, 1)"),
        (top["batch_size"] >= 1, "batch_size", "must be >= 1"),
        (top["lr"] > 0, "lr", "must be > 0"),
        (top["weight_decay"] >= 0, "weight_decay", "must be >= 0"),
        (top["epochs"] >= 1, "epochs", "must be >= 1"),
        (top["patience"] == -1 or top["patience"] >= 1, "patience", "must be >= 1, or -1 to disable early stopping"),
        (top["min_change"] >= 0, "min_change", "must be >= 0"),
        (top["clip_norm"] > 0, "clip_norm", "must be > 0"),
        (top["kfolds"] >= 2, "kfolds", "must be >= 2"),
        (top["ensemble_size"] >= 2, "ensemble_size", "must be >= 2"),
        (top["final_fit"] == "inner" or top["selection"] == "inner", "final_fit",
         "needs selection=\"inner\" (a refit on the training part must not include the test fold used for selection)"),
        (top["inner_val_actors"] == "auto" or (isinstance(top["inner_val_actors"], int)
                                                and top["inner_val_actors"] >= 1),
         "inner_val_actors", "must be \"auto\" or an integer >= 1"),
        (top["num_threads"] is None or top["num_threads"] >= 1, "num_threads", "must be >= 1 or null"),
        (top["device"] == "auto" or top["device"] == "cpu" or top["device"].startswith("cuda"), "device",
         "must be 'auto', 'cpu' or 'cuda[:N]'"),
    ]
    # The name becomes part of file names (posterior files): a path in it would write elsewhere.
    checks.append((top["name"] not in ("", ".", "..") and not any(c in top["name"] for c in "/\\")
                   and ".." not in top["name"], "name", "must be a plain file name, without '/', '\\' or '..'"))
    for ok, key, rule in checks:
        if not ok:
            value = {"model_params.encoder.dim": enc["dim"], "model_params.encoder.layers": enc["layers"],
                     "model_params.encoder.dropout": enc["dropout"], "model_params.attention.layers": att["layers"],
                     "model_params.attention.dropout": att["dropout"]}.get(key, top.get(key))
            raise ConfigError(f"{where}: {key}={json.dumps(value)} {rule}.")
    flat = {k: v for k, v in top.items() if k != "model_params"}
    return Config(
        **flat,
        encoder_dim=enc["dim"], encoder_layers=enc["layers"], encoder_dropout=float(enc["dropout"]),
        bidirectional=enc["bidirectional"], attention_layers=att["layers"], attention_dropout=float(att["dropout"]),
        attention_activation=att["activation"], attention_context=att["context"],
        attention_input_stats=att["input_stats"], source=where,
    )


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
