"""`edgeloop data`: a user's own table, before it is trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.console import ParamsOption, console

data_app = typer.Typer(
    no_args_is_help=True, help="A user's own table, or a built-in data set."
)


@data_app.command()
def describe(
    path: Annotated[Path, typer.Argument(help="a .csv or .parquet table")],
    label: Annotated[str, typer.Option(help="the column to predict")] = "label",
    out: Annotated[
        Path | None, typer.Option(help="write the proposal here, not to the screen")
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="merge the proposal into --params (other sections kept; the old "
            "file kept as .before-describe) and copy the table to data/sources/",
        ),
    ] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Propose `data:`, `validation:` and `features:` sections for a table (each
    column's kind, categories and gap policy, from what was measured), to review
    and paste into params.yaml, or, with --write, merged into it."""
    from components.data.describe import propose, write_proposal

    if write:
        for line in write_proposal(path, label, params_file):
            console.print(line)
        return
    text = propose(path, label)
    if out is None:
        console.print(text, markup=False, highlight=False, end="")
        return
    out.write_text(text)
    console.print(f"proposal written to {out}: review it, then paste into params.yaml")


@data_app.command()
def use(
    name: Annotated[str, typer.Argument(help="a preset in data/presets/ (kws)")],
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Switch the project to a built-in data set: merge its preset
    (data/presets/NAME.yaml: `data:`, `split:`, `validation:`, `features:` whole,
    the network and the gates key by key) into --params; the old file is kept as
    .before-use. `kws`: keyword spotting on clips spoken by espeak-ng."""
    from components.data.presets import use_preset

    console.print(use_preset(name, params_file))
