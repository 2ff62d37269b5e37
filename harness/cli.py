"""Placeholder CLI; replaced by the real typer app."""

import typer

app = typer.Typer(help="Claude batch replay and load-benchmark harness.")


@app.command()
def version() -> None:
    """Print the version."""
    from harness import __version__

    print(__version__)


def main() -> None:
    app()
