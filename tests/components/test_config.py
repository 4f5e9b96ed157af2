"""params.yaml is validated on load: each kind of mistake names the key and what is
allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import Params, load_params, parse_params
from components.errors import ConfigError
from tests.conftest import default_params_dict


def test_shipped_params_load(default_params):
    assert default_params.data.source == "sklearn:digits"
    assert default_params.train.backend == "torch"
    assert len(default_params.digest()) == 16


def test_unknown_top_level_key_is_an_error():
    raw = default_params_dict() | {"trian": {"epochs": 3}}
    with pytest.raises(
        ConfigError,
        match=r"trian: unknown key; allowed keys here: "
        r"paths, data, split, validation, features, train, optimize, registry",
    ):
        parse_params(raw)


def test_unknown_nested_key_names_the_allowed_ones():
    raw = default_params_dict(train={"epoch": 3})
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key; .*epochs"):
        parse_params(raw)


def test_wrong_type_names_key_and_value():
    raw = default_params_dict(train={"epochs": "many"})
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer.*got 'many'"):
        parse_params(raw)


def test_value_outside_allowed_set():
    raw = default_params_dict(train={"backend": "tensorflow"})
    with pytest.raises(
        ConfigError, match=r"train\.backend: .*'torch'.*got 'tensorflow'"
    ):
        parse_params(raw)


def test_out_of_range_number():
    raw = default_params_dict(train={"learning_rate": -0.1})
    with pytest.raises(ConfigError, match=r"train\.learning_rate: .*greater than 0"):
        parse_params(raw)


def test_splits_must_leave_training_rows():
    raw = default_params_dict(split={"val": 0.5, "test": 0.45})
    with pytest.raises(ConfigError, match=r"split: .*val \+ test = 0\.95"):
        parse_params(raw)


def test_unknown_sklearn_source_lists_the_allowed_ones():
    raw = default_params_dict(data={"source": "sklearn:mnist"})
    with pytest.raises(ConfigError, match=r"data: .*sklearn:mnist.*sklearn:digits"):
        parse_params(raw)


def test_source_file_must_be_csv_or_parquet():
    raw = default_params_dict(data={"source": "data/x.xlsx"})
    with pytest.raises(
        ConfigError,
        match=r"must be sklearn:<name>, speech:espeak-ng or a .csv/.parquet",
    ):
        parse_params(raw)


def test_a_speech_source_needs_its_speech_section():
    raw = default_params_dict(data={"source": "speech:espeak-ng"})
    with pytest.raises(
        ConfigError, match=r"speech:espeak-ng' needs a `speech:` section"
    ):
        parse_params(raw)
    raw = default_params_dict(
        data={
            "source": "speech:espeak-ng",
            "speech": {"words": ["yes"], "noise": ["rain"]},
        }
    )
    with pytest.raises(ConfigError, match=r"speech.noise \['rain'\]: expected some of"):
        parse_params(raw)


def test_the_kws_preset_is_valid_params():
    import yaml

    from components.data.presets import merge
    from tests.conftest import REPO

    preset = yaml.safe_load((REPO / "data" / "presets" / "kws.yaml").read_text())
    raw = default_params_dict()
    merge(raw, preset)
    params = parse_params(raw)
    assert params.validation.labels[:2] == ["yes", "no"]  # quoted: not booleans
    assert params.data.speech is not None and params.data.speech.words[6] == "on"


def test_missing_required_section():
    raw = default_params_dict()
    del raw["registry"]
    with pytest.raises(ConfigError, match=r"registry: required key is missing"):
        parse_params(raw)


def test_reversed_range():
    raw = default_params_dict(validation={"feature_range": [16, 0]})
    with pytest.raises(
        ConfigError, match=r"validation: .*\[16.0, 0.0\]; need min<=max"
    ):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)


def test_ship_variant_must_exist_for_the_backend():
    raw = default_params_dict(optimize={"ship_variant": "fp16"})
    with pytest.raises(
        ConfigError,
        match=r"optimize.ship_variant 'fp16' is not made "
        r"by the torch backend; allowed: fp32, int8_static",
    ):
        parse_params(raw)


# What describes the embedded data set rather than tuning the pipeline: a user's own
# table has its own or none, so the model's default is "none".
DATA_DESCRIPTION = {
    "data.image_shape",
    "data.license",
    "data.known_limitations",
    "validation.feature_range",
}


def _leaves(tree: dict, prefix: str) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_params_model_defaults_are_params_yaml(default_params):
    """A key left out of a params file means what params.yaml says (or it is
    required): each section built from its defaults and its required fields only
    equals params.yaml's, but for the data set's own description."""
    differ = []
    for name, field in Params.model_fields.items():
        shipped = getattr(default_params, name)
        required = {
            k: getattr(shipped, k)
            for k, f in type(shipped).model_fields.items()
            if f.is_required()
        }
        built = field.annotation(**required)
        a = _leaves(built.model_dump(mode="json"), f"{name}.")
        b = _leaves(shipped.model_dump(mode="json"), f"{name}.")
        differ += [
            f"{k}: {a.get(k)!r} in components/config.py, {b.get(k)!r} in params.yaml"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in DATA_DESCRIPTION
        ]
    assert not differ, differ


def test_using_the_kws_preset_keeps_the_keywords_quoted(tmp_path):
    from components.config import load_params
    from components.data.presets import use_preset
    from tests.conftest import REPO

    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    use_preset("kws", params_file)
    params = load_params(params_file)
    assert params.data.name == "kws" and params.train.network == "dscnn"
    assert params.registry.gates.min_test_accuracy == 0.90
    assert params.registry.gates.max_drop_vs_champion == 0.01  # the rest kept
    assert "# Every tunable of the pipeline" in params_file.read_text()
    with pytest.raises(
        ConfigError, match="preset 'sound' does not exist; presets: kws"
    ):
        use_preset("sound", params_file)
