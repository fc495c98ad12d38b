import json

import pytest

from aus_lib.config import ConfigError, describe, load_config
from aus_lib.paths import PARAMS_DIR

PAPER = PARAMS_DIR / "RAVDESS_AUs.json"


def write(tmp_path, params, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(params) if not isinstance(params, str) else params)
    return path


def paper_params():
    return json.loads(PAPER.read_text())


def test_paper_config_loads_with_the_original_values():
    cfg = load_config(PAPER)
    assert (cfg.encoder_dim, cfg.encoder_layers, cfg.encoder_dropout, cfg.bidirectional) == (50, 2, 0.3, True)
    assert (cfg.attention_layers, cfg.attention_activation, cfg.attention_context) == (2, "tanh", False)
    assert (cfg.batch_size, cfg.lr, cfg.patience, cfg.epochs, cfg.seed, cfg.clip_norm) == (64, 0.001, 30, 300, 2020, 1.0)
    assert cfg.selection == "test_fold"  # files without the key behave like the original


def test_posteriors_file_loads_and_requires_its_keys(tmp_path):
    cfg = load_config(PARAMS_DIR / "RAVDESS_AUs_posteriors.json", posteriors=True)
    assert cfg.inference_data in ("train", "val")
    with pytest.raises(ConfigError, match="inference_data"):
        load_config(PAPER, posteriors=True)


def test_to_params_round_trips(tmp_path):
    cfg = load_config(PAPER)
    again = load_config(write(tmp_path, cfg.to_params()))
    assert again == cfg


def test_overrides_flat_dotted_and_nested():
    cfg = load_config(PAPER, {"epochs": 3, "patience": None, "model_params.encoder.dim": 8,
                              "model_params": {"attention": {"activation": "relu"}}})
    assert (cfg.epochs, cfg.patience, cfg.encoder_dim, cfg.attention_activation) == (3, 30, 8, "relu")
    assert "epochs" in cfg.source


def test_unknown_key_is_named_with_the_file(tmp_path):
    p = paper_params(); p["learning_rate"] = 0.1
    path = write(tmp_path, p)
    with pytest.raises(ConfigError, match=r"learning_rate.*") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unknown_nested_key_is_named(tmp_path):
    p = paper_params(); p["model_params"]["encoder"]["units"] = 3
    with pytest.raises(ConfigError, match=r"model_params\.encoder\.units"):
        load_config(write(tmp_path, p))


def test_missing_key_is_named(tmp_path):
    p = paper_params(); del p["batch_size"]
    with pytest.raises(ConfigError, match="missing required key 'batch_size'"):
        load_config(write(tmp_path, p))


@pytest.mark.parametrize("key,value", [("batch_size", "64"), ("lr", "fast"), ("epochs", 2.5), ("epochs", True),
                                       ("disable_cache", 1)])
def test_wrong_type_is_named(tmp_path, key, value):
    p = paper_params(); p[key] = value
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        load_config(write(tmp_path, p))


def test_invalid_json_shows_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "name": "x",\n  "lr": 0.1,,\n}')
    with pytest.raises(ConfigError, match=r"line 3, column"):
        load_config(path)


@pytest.mark.parametrize("override,key", [
    ({"model_params.encoder.dim": 0}, "model_params.encoder.dim"),
    ({"model_params.encoder.dropout": 1.0}, "model_params.encoder.dropout"),
    ({"model_params.attention.dropout": -0.1}, "model_params.attention.dropout"),
    ({"lr": 0.0}, "lr"),
    ({"kfolds": 1}, "kfolds"),
    ({"patience": 0}, "patience"),
    ({"selection": "nested"}, "selection"),
    ({"model_params.attention.activation": "gelu"}, "activation"),
    ({"input_size": 17}, "input_size"),
])
def test_impossible_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(PAPER, override)


def test_patience_minus_one_disables_early_stopping():
    assert load_config(PAPER, {"patience": -1}).patience == -1


def test_missing_file_says_where_params_live(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")


def test_describe_mentions_the_selection_caveat():
    assert "optimistic" in describe(load_config(PAPER))
    assert "optimistic" not in load_config(PAPER, {"selection": "inner"}).selection_note


def test_demo_params_are_valid():
    cfg = load_config(PARAMS_DIR / "demo.json")
    assert cfg.epochs < 50


def test_every_problem_of_a_file_is_named_at_once_with_its_key_path(tmp_path):
    p = paper_params(); p["lr"] = "fast"; p["model_params"]["attention"]["dropout"] = 2
    path = write(tmp_path, p)
    with pytest.raises(ConfigError, match=r"model_params\.attention\.dropout=2 must be less than 1") as err:
        load_config(path)
    assert "key 'lr' must be a number" in str(err.value) and str(path) in str(err.value)


def test_config_is_frozen_and_replace_validates_again():
    cfg = load_config(PAPER)
    with pytest.raises(AttributeError, match="frozen"):
        cfg.lr = 0.1
    assert cfg.replace(encoder_dim=8).to_params()["model_params"]["encoder"]["dim"] == 8
    with pytest.raises(ConfigError, match="model_params.encoder.dim=0"):
        cfg.replace(encoder_dim=0)
