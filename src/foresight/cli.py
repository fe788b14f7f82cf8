"""Command line: `foresight …` (placeholder until CLI lands)."""

from __future__ import annotations

import typer

app = typer.Typer()


def main() -> None:
    app()
