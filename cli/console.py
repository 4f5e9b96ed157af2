"""What every command prints to (Rich consoles) and the options they share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(soft_wrap=True)
err = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params")]
ProjectOption = Annotated[Path, typer.Option(help="project root")]
