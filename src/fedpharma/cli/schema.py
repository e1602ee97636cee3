"""``fedpharma schema``: infer a tabular file's schema (a starting point to check and edit) and
check a declared one against the data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedpharma.cli.errors import friendly_errors

schema_app = typer.Typer(help="The declared schema of a tabular CSV file.", no_args_is_help=True)


@schema_app.command()
@friendly_errors
def infer(
    data: Annotated[Path, typer.Argument(help="A CSV file (.csv, .csv.gz).")],
    label: Annotated[list[str], typer.Option(help="A label column (repeat for several).")],
    site: Annotated[str | None, typer.Option(help="The column naming each record's site.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the schema here (default: print it).")
    ] = None,
) -> None:
    """Infer DATA's schema: types, categories, missing-value codes such as '?'. Check it, add
    units, plausible ranges and codes such as a hospital's 0, then point [dataset] schema at it."""
    from fedpharma.data.schema import schema_toml
    from fedpharma.data.tabular import infer_schema

    text = schema_toml(infer_schema(data, label, site))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f'schema written to {out}; check it, then set [dataset] schema = "{out}"')


def register(app: typer.Typer) -> None:
    app.add_typer(schema_app, name="schema")
