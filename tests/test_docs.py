"""The documentation site (mkdocs.yml, docs/): it builds in strict mode with no
warning; the README is short and its links land on pages; the reference generated
at each build (cli/docs_site.py) covers every key of the params models and of
params.yaml, each with its meaning, and every command and option of the app."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import typing
from pathlib import Path

import click
import typer
import yaml
from pydantic import BaseModel

from cli.app import app
from cli.docs_site import cli_page, params_page
from components.config import Params
from tests.conftest import BIN

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_strictly_with_no_warning(tmp_path: Path):
    built = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-3000:]
    assert "WARNING" not in output, output[-3000:]
    for page in ("reference/params", "reference/cli", "reference/fleet-api"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def _models(annotation: object) -> list[type[BaseModel]]:
    return [
        a
        for a in (annotation, *typing.get_args(annotation))
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key the models define; a dict of models' entries as <name>."""
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for inner in _models(field.annotation):
            mapping = "dict" in str(field.annotation)
            keys |= model_keys(inner, f"{prefix}{name}.{'<name>.' if mapping else ''}")
    return keys


def yaml_keys(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    keys = set()
    for name, inner in value.items():
        key = f"{prefix}{name}"
        keys |= {key} | yaml_keys(inner, key + ".")
    return keys


def test_the_params_reference_covers_every_key_with_its_meaning():
    rows = {}
    for line in params_page().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells[-1]
    assert set(rows) == model_keys(Params)
    assert not [key for key, meaning in rows.items() if not meaning.strip()]
    # Every key the project's own params.yaml sets is on the page (an entry of a
    # dict of models as <name>; a dict of values is one key).
    documented = set(rows)
    for key in yaml_keys(yaml.safe_load((ROOT / "params.yaml").read_text())):
        parts = key.split(".")
        candidates = {
            ".".join("<name>" if j == i else p for j, p in enumerate(parts))
            for i in range(len(parts))
        } | {key}
        parent_is_leaf = any(
            ".".join(parts[:i]) in documented
            and not any(k.startswith(".".join(parts[:i]) + ".") for k in documented)
            for i in range(1, len(parts))
        )
        entry = any(d.startswith(c + ".") for c in candidates for d in documented)
        assert candidates & documented or entry or parent_is_leaf, key


def test_the_cli_reference_covers_every_command_and_option():
    page = cli_page()

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")
        if not getattr(command, "commands", None):
            yield path, command

    commands = list(walk(typer.main.get_command(app), "edgeloop"))
    assert len(commands) > 20
    for path, command in commands:
        assert f"## `{path}`" in page, path
        section = page.split(f"## `{path}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            for opt in param.opts if param.param_type_name == "option" else []:
                assert f"`{opt}`" in section, (path, opt)


def test_the_readme_is_short_and_its_links_land_on_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\((docs/[^)#]*)", readme)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link
    # The site's home page is the README, its links made relative to docs/.
    home = readme.replace(
        "(its pages are the Markdown under [`docs/`](docs/))",
        "(its pages are the Markdown under `docs/`)",
    ).replace("](docs/", "](")
    assert (ROOT / "docs" / "index.md").read_text() == home
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        assert str(page.relative_to(ROOT / "docs")) in nav, page


ILLUSTRATIVE = "<!-- illustrative -->"


def bash_blocks(text: str) -> list[tuple[bool, str]]:
    """Each ```bash block of a page, and whether the line above marks it
    illustrative (not a command this repository checks)."""
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", text, re.DOTALL):
        above = text[: match.start()].rstrip().splitlines()[-1:] or [""]
        blocks.append((above[0].strip() == ILLUSTRATIVE, match.group(1)))
    return blocks


def test_every_command_the_docs_show_exists_with_the_options_they_give():
    """An `edgeloop` line is parsed by the app's own Click command (a renamed
    command or option fails here); a `make` line names a target of the Makefile;
    any other block is marked illustrative."""
    root = typer.main.get_command(app)
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    checked = 0
    for page in pages:
        for illustrative, block in bash_blocks(page.read_text()):
            if illustrative:
                continue
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                where = f"{page.relative_to(ROOT)}: {line.strip()}"
                if words[0] == "make":
                    assert all(w in targets for w in words[1:] if "=" not in w), where
                    checked += 1
                    continue
                assert words[0].endswith("edgeloop"), (
                    f"{where}: not an edgeloop or make command; mark the block "
                    f"{ILLUSTRATIVE}"
                )
                command, args = root, words[1:]
                while isinstance(command, click.Group):
                    assert args and args[0] in command.commands, where
                    command, args = command.commands[args[0]], args[1:]
                command.make_context(words[0], args)  # UsageError names what
                checked += 1
    assert checked > 20
