"""`sotopia-pi models list|pull`: the model catalog from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from ..catalog import CatalogEntry, CatalogError, DownloadInterrupted, is_pulled, load_catalog, local_path, pull
from .app import app, emit_json, fail

models_app = typer.Typer(help="The model catalog: list presets, download GGUF models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _row(entry: CatalogEntry, default: str, catalog) -> dict:
    pulled = entry.kind != "api" and is_pulled(entry.name, catalog)
    return {
        "name": entry.name,
        "kind": entry.kind,
        "default": entry.name == default,
        "pulled": pulled,
        "model_name": entry.model_name,
        "path": str(local_path(entry.name, catalog)) if entry.kind != "api" else None,
        "approx_size_mb": entry.approx_size_mb,
        "license": entry.license,
        "description": entry.description,
        "url": entry.url,
        "chat_notes": entry.chat_notes,
    }


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
) -> None:
    """List the catalog: which models are downloaded and which is the default."""
    try:
        catalog = load_catalog()
        rows = [_row(entry, catalog.default, catalog) for entry in catalog.models.values()]
    except CatalogError as error:
        raise fail(str(error))
    if as_json:
        emit_json({"catalog": str(catalog.source), "default": catalog.default, "models": rows})
        return
    table = Table(title=f"Model catalog ({catalog.source})")
    for column in ("name", "kind", "size", "status", "use as", "license"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "ready" if row["kind"] == "embedded" else ("pulled" if row["pulled"] else "")
        if row["kind"] == "api":
            status = "endpoint"
        name = row["name"] + (" (default)" if row["default"] else "")
        size = f"{row['approx_size_mb']:.0f} MB" if row["approx_size_mb"] else ""
        table.add_row(name, row["kind"], size, status, row["model_name"], row["license"])
    Console().print(table)


@models_app.command("pull")
def pull_model(name: Annotated[str, typer.Argument(help="A catalog name (see `sotopia-pi models list`).")]) -> None:
    """Download a catalog GGUF into the models folder (resumes an interrupted download)."""
    try:
        catalog = load_catalog()
        entry = catalog.get(name)
        if entry.kind != "gguf" or is_pulled(name, catalog):
            typer.echo(str(pull(name, catalog=catalog)))  # nothing to download; explains api entries
            return
    except CatalogError as error:
        raise fail(str(error))
    progress = Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task("download", total=entry.size_bytes)

    def report(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    try:
        with progress:
            path = pull(name, progress=report, catalog=catalog)
    except DownloadInterrupted as error:
        raise fail(str(error), code=3)
    except CatalogError as error:
        raise fail(str(error))
    except KeyboardInterrupt:
        raise fail(f"interrupted; run `sotopia-pi models pull {name}` again to resume", code=130)
    typer.echo(str(path))
