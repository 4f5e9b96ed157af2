"""The documentation site's reference pages, generated from the code at every build
(a MkDocs hook: `hooks:` in mkdocs.yml), so a renamed key, command or route cannot
leave the docs behind:

- `reference/params.md`: every params.yaml key, from the pydantic models
  (components/config): its type, default and range, and its meaning from the
  comment beside it in params.yaml;
- `reference/cli.md`: every command of the Typer app (cli/app.py), its usage, help
  and options;
- `reference/fleet-api.md`, `reference/webhook-api.md`: every route of the fleet
  server and the webhook receiver, from their OpenAPI schemas (the same schemas
  the fuzz test runs), with the answers each may give.

tests/test_docs.py compares the pages with the models, the app and params.yaml, and
builds the site in strict mode."""

from __future__ import annotations

import inspect
import json
import re
import sys
import tempfile
import types
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from components.config import Params

# Typer 0.x imports two stream helpers Click 8.3 deprecates: not this site's to fix,
# and noise in every build's output.
warnings.filterwarnings(
    "ignore", message=r"'click\.utils\.get_(binary|text)_stream' is deprecated"
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "reference/params.md": "params_page",
    "reference/cli.md": "cli_page",
    "reference/fleet-api.md": "fleet_api_page",
    "reference/webhook-api.md": "webhook_api_page",
}


# -- params.yaml ---------------------------------------------------------------


def yaml_comments(path: Path) -> dict[str, str]:
    """`dotted.key -> the comment on its line` of a params file (a key's comment,
    and the lines of comment right under it that continue it)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: str | None = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            last = None
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if last is not None:
                comments[last] += " " + stripped.lstrip("# ").strip()
            continue
        match = re.match(r"([A-Za-z0-9_]+):(.*)$", stripped)
        if not match:
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        key = ".".join(name for _, name in stack)
        _, _, comment = match.group(2).partition(" #")
        comments[key] = comment.strip().lstrip("# ").strip()
        last = key if comments[key] else None
    return {k: v for k, v in comments.items() if v}


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """`field -> its comment` in the model's source: the comment at the end of the
    field's line, else the comment lines right above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(model).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"([a-z_][a-z0-9_]*)\s*:", stripped)
        if match and line.startswith("    ") and not line.startswith("     "):
            _, hashed, trailing = stripped.partition("  #")
            text = trailing.strip() if hashed else " ".join(above)
            if text:
                comments[match.group(1)] = text
        above = []
    return comments


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        name = _type_name(args[0])
    elif origin in (typing.Union, types.UnionType):
        name = " | ".join(_type_name(a) for a in args)
    elif origin is typing.Literal:
        name = " | ".join(json.dumps(a) for a in args)
    elif origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        name = f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    elif annotation is type(None):
        name = "null"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = "mapping"
    else:
        name = getattr(annotation, "__name__", str(annotation))
    return name


def _range(field: FieldInfo) -> str:
    bounds = []
    for m in field.metadata:
        for attr, sign in (
            ("ge", ">="),
            ("gt", ">"),
            ("le", "<="),
            ("lt", "<"),
            ("min_length", "length >="),
            ("max_length", "length <="),
        ):
            value = getattr(m, attr, None)
            if value is not None and isinstance(m, annotated_types.BaseMetadata):
                bounds.append(f"{sign} {value}")
    return ", ".join(bounds)


def _default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return PydanticUndefined


def _shown(value: Any) -> str:
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, dict) and any(
        isinstance(v, BaseModel) for v in value.values()
    ):
        return ", ".join(value) or "{}"
    return json.dumps(value, default=str)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, or a dict's values: `<name>`)."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def params_keys(
    model: type[BaseModel] = Params, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo, str]]:
    """Every key of params.yaml the models define, dotted, with the comment its
    model's source gives it; a dict of models (the device profiles, the feature
    columns) as `<name>`."""
    comments = source_comments(model)
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, field, comments.get(name, "")
        inner = _model_of(field.annotation)
        if inner is None:
            continue
        is_mapping = typing.get_origin(field.annotation) is dict or any(
            typing.get_origin(a) is dict for a in typing.get_args(field.annotation)
        )
        yield from params_keys(inner, f"{key}.<name>." if is_mapping else f"{key}.")


def params_page() -> str:
    comments = yaml_comments(ROOT / "params.yaml")
    lines = [
        "# params.yaml",
        "",
        "Every key the pipeline, serving, the fleet and the monitor read, generated "
        "from the pydantic models in `components/config/` at each build of this "
        "site. *Meaning* is the comment beside the key in the repository's "
        "`params.yaml` (or the model's own description). A key not set in "
        "`params.yaml` takes its default; an unknown key is an error that names it.",
        "",
    ]
    section = None
    for key, field, in_source in params_keys():
        top = key.split(".")[0]
        if top != section:
            lines += [""] if section else []
            section = top
            lines += [f"## `{top}`", "", "| key | type | default | range | meaning |"]
            lines += ["|---|---|---|---|---|"]
        inner = _model_of(field.annotation)
        meaning = (
            field.description
            or comments.get(key)
            or in_source
            or (
                (inner.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
                if inner
                else ""
            )
        )
        if not meaning and "<name>" in key:
            concrete = [
                k
                for k in comments
                if re.fullmatch(re.escape(key).replace(re.escape("<name>"), "[^.]+"), k)
            ]
            meaning = comments[concrete[0]] if concrete else ""
        row = [
            f"`{key}`",
            _type_name(field.annotation).replace("|", "\\|"),
            _shown(_default(field)).replace("|", "\\|"),
            _range(field),
            meaning.replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- the command line ----------------------------------------------------------


def cli_commands() -> Iterator[tuple[str, click.Command]]:
    """Every command of the `edgeloop` app, as `edgeloop fleet status`."""
    import typer

    from cli.app import app

    root = typer.main.get_command(app)

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                yield from walk(command.commands[name], f"{path} {name}")
        else:
            yield path, command

    yield from walk(root, "edgeloop")


def cli_page() -> str:
    lines = [
        "# The `edgeloop` command",
        "",
        "Every command of the Typer app (`cli/app.py`), generated at each build of "
        "this site: what `edgeloop COMMAND --help` prints. "
        "[Commands, by task](commands.md) says which to use when.",
        "",
    ]
    for path, command in cli_commands():
        ctx = click.Context(command, info_name=path)
        lines += [f"## `{path}`", "", "```text", command.get_usage(ctx), "```", ""]
        lines += [(command.help or "").strip(), ""]
        options = [p for p in command.params if p.name != "help"]
        if options:
            lines += ["| option | default | help |", "|---|---|---|"]
            for param in options:
                names = ", ".join(
                    f"`{o}`" for o in (*param.opts, *param.secondary_opts)
                )
                default = param.default if not callable(param.default) else ""
                shown = "" if default in (None, "") else f"`{default}`"
                help_text = getattr(param, "help", None) or ""
                if isinstance(param, click.Argument):
                    names, help_text = f"`{param.human_readable_name}`", "(argument)"
                lines.append(
                    f"| {names} | {shown} | {help_text.replace('|', chr(92) + '|')} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


# -- the HTTP APIs -------------------------------------------------------------


def fleet_openapi() -> dict:
    """The fleet server's schema, from the very routers it serves."""
    from fastapi import FastAPI

    from edge_fleet.server.app import include_routes

    app = FastAPI(title="edgeloop fleet server")
    include_routes(app)
    return app.openapi()


def webhook_openapi() -> dict:
    from stack.webhook_receiver import DeliveryLog, create_app

    with tempfile.TemporaryDirectory() as folder:
        app = create_app("unused", lambda _: None, deliveries=DeliveryLog(Path(folder)))
        return app.openapi()


def api_page(title: str, intro: str, schema: dict) -> str:
    lines = [f"# {title}", "", intro, ""]
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            lines += [f"## `{method.upper()} {path}`", ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | schema |", "|---|---|---|---|"]
                for p in params:
                    shown = json.dumps(p.get("schema", {}), sort_keys=True)
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {p.get('required', False)} "
                        f"| `{shown.replace('|', chr(92) + '|')}` |"
                    )
                lines.append("")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                ref = content.get("schema", {}).get("$ref", "")
                lines += [
                    f"Body: `{media}`" + (f", `{ref.split('/')[-1]}`" if ref else ""),
                    "",
                ]
            lines += ["| status | when |", "|---|---|"]
            for status, answer in sorted(op.get("responses", {}).items()):
                lines.append(f"| {status} | {answer.get('description', '')} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def fleet_api_page() -> str:
    return api_page(
        "The fleet server's API",
        "Generated from the fleet server's OpenAPI schema (`edge_fleet/server/`) at "
        "each build of this site; a running server serves the same schema at "
        "`/openapi.json` (its `/docs` page loads Swagger UI from a CDN: blank "
        "offline). Devices send their own bearer token, admins the admin token.",
        fleet_openapi(),
    )


def webhook_api_page() -> str:
    return api_page(
        "The webhook receiver's API",
        "Generated from the receiver's OpenAPI schema (`stack/webhook_receiver.py`) "
        "at each build of this site. MLflow calls it, signing each delivery.",
        webhook_openapi(),
    )


# -- the MkDocs hook -------------------------------------------------------------


def on_files(files, config):
    """Add the generated pages to the site's files (MkDocs 1.6 `File.generated`)."""
    from mkdocs.structure.files import File

    for name, builder in PAGES.items():
        files.append(File.generated(config, name, content=globals()[builder]()))
    return files


# -- screenshots of the UIs `make run` leaves running ---------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's, as the browser test uses it
SHOTS = {
    "mlflow.png": ("MLFLOW", "/#/models/{model}"),
    "prefect.png": ("PREFECT", "/runs"),
    "evidently.png": ("EVIDENTLY", "/"),
}
# Not the fleet server's /docs: FastAPI's Swagger UI loads its script from a CDN,
# and on a machine without one the page is blank (the docs' fleet-api page is the
# offline reference).


def screenshots(out: Path, state_dir: Path, urls: dict[str, str], model: str) -> list:
    """One screenshot of each UI of a running stack (after `make run`), logged in
    with the stack's own secrets: MLflow's service user, Prefect's auth string."""
    import base64

    from playwright.sync_api import sync_playwright

    secrets = json.loads((state_dir / "secrets.json").read_text())
    prefect_auth = base64.b64encode(secrets["prefect_auth_string"].encode()).decode()
    out.mkdir(parents=True, exist_ok=True)
    taken = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for name, (service, path) in SHOTS.items():
                context = browser.new_context(
                    viewport={"width": 1280, "height": 760},
                    http_credentials={
                        "username": "edgeloop",
                        "password": secrets["mlflow_service_password"],
                    }
                    if service == "MLFLOW"
                    else None,
                    extra_http_headers={"Authorization": f"Basic {prefect_auth}"}
                    if service == "PREFECT"
                    else None,
                )
                page = context.new_page()
                page.goto(urls[service] + path.format(model=model))
                page.wait_for_load_state("load", timeout=60_000)
                # The single-page apps draw after load (and poll: never idle).
                page.wait_for_timeout(5000)
                page.screenshot(path=str(out / name))
                taken.append(out / name)
                context.close()
        finally:
            browser.close()
    return taken


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="screenshots of a running stack's UIs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".edgeloop")
    parser.add_argument("--model", default="edgeloop-digits")
    args = parser.parse_args()
    from stack.settings import get_settings

    settings = get_settings()
    urls = {
        "MLFLOW": settings.tracking_uri,
        "PREFECT": settings.prefect_ui,
        "EVIDENTLY": settings.evidently_url,
        "FLEET": settings.fleet_url,
    }
    for shot in screenshots(args.out, args.state_dir, urls, args.model):
        sys.stdout.write(f"{shot}\n")
