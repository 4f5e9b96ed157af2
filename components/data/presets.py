"""Built-in data sets beyond the embedded digits, as params presets
(`data/presets/<name>.yaml`): `edgeloop data use NAME` merges one into params.yaml."""

from __future__ import annotations

import shutil
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from components.errors import ConfigError

PRESETS = Path(__file__).resolve().parents[2] / "data" / "presets"
# Sections a preset replaces whole (what the data is and how it is checked); the
# others it changes key by key, the rest of params.yaml kept.
REPLACED = ("data", "split", "validation", "features")


def preset_names(folder: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def merge(params: MutableMapping[str, Any], preset: MutableMapping[str, Any]) -> None:
    """`preset` into `params`, in place: REPLACED sections whole, others key by key
    (a nested mapping merged the same way)."""
    for section, body in preset.items():
        if section in REPLACED or not isinstance(body, MutableMapping):
            params[section] = body
        elif isinstance(params.get(section), MutableMapping):
            _deep(params[section], body)
        else:
            params[section] = body


def _deep(into: MutableMapping[str, Any], body: MutableMapping[str, Any]) -> None:
    for key, value in body.items():
        if isinstance(value, MutableMapping) and isinstance(
            into.get(key), MutableMapping
        ):
            _deep(into[key], value)
        else:
            into[key] = value


def use_preset(name: str, params_file: Path, folder: Path = PRESETS) -> str:
    """Merge preset `name` into `params_file`, comments and quoting kept (YAML 1.1
    reads an unquoted yes/no/on/off as a boolean: the keywords stay quoted). The
    file as it was is kept beside it (`.before-use`); what is written must load as
    params, or the file is put back."""
    from ruamel.yaml import YAML

    source = folder / f"{name}.yaml"
    if not source.is_file():
        raise ConfigError(
            f"data preset {name!r} does not exist; "
            f"presets: {', '.join(preset_names(folder))}"
        )
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 100
    params = rt.load(params_file.read_text())
    merge(params, rt.load(source.read_text()))
    backup = dump_checked(rt, params, params_file, ".before-use")
    return f"merged {source.name} into {params_file} (as it was: {backup})"


def dump_checked(rt: Any, params: Any, params_file: Path, suffix: str) -> Path:
    """Write `params` (a ruamel round-trip document) to `params_file`, the file as
    it was kept beside it (`<name><suffix>`); what is written must load as params,
    or the file is put back and the error raised. Returns the kept copy."""
    from components.config import load_params

    backup = params_file.with_name(f"{params_file.name}{suffix}")
    shutil.copyfile(params_file, backup)
    with params_file.open("w") as out:
        rt.dump(params, out)
    try:
        load_params(params_file)
    except ConfigError:
        shutil.copyfile(backup, params_file)
        raise
    return backup
