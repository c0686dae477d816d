"""`sotopia-pi adapters list|show|export|delete`: the registry of trained LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..adapters import AdapterError, AdapterRecord, delete_adapter, export_adapter, get_adapter, list_adapters
from ..store import NotFound, Store, StoreError
from .app import app, emit_json, fail

adapters_app = typer.Typer(help="Trained LoRA adapters: list, show, export, delete.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]
ReferenceArgument = Annotated[str, typer.Argument(help="NAME (the newest version) or NAME@vN.")]


def _held_out(record: AdapterRecord) -> str:
    metrics = record.metrics
    base, adapter = metrics.get("heldout_loss_base"), metrics.get("heldout_loss_adapter")
    if isinstance(base, (int, float)) and isinstance(adapter, (int, float)):
        return f"{adapter:.3f} (base {base:.3f})"
    return ""


@adapters_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every registered adapter version, with its base, snapshot and held-out loss."""
    with Store() as store:
        records = list_adapters(store)
    if as_json:
        emit_json({"adapters": [record.model_dump(mode="json") for record in records]})
        return
    if not records:
        typer.echo("No adapters yet: train one with `sotopia-pi train`.")
        return
    table = Table(title="Adapters")
    for column in ("adapter", "base", "snapshot", "held-out loss", "status", "created"):
        table.add_column(column, overflow="fold")
    for record in records:
        created = record.created_at[:19]
        table.add_row(record.reference, record.base_model, record.snapshot, _held_out(record), record.status, created)
    Console().print(table)


@adapters_app.command("show")
def show_command(reference: ReferenceArgument, as_json: JsonOption = False) -> None:
    """One adapter version: provenance, hyperparameters, metrics and files."""
    with Store() as store:
        try:
            record = get_adapter(store, reference)
        except (NotFound, AdapterError) as error:
            raise fail(str(error))
    if as_json:
        emit_json(record)
        return
    for key, value in record.model_dump(exclude={"hyperparameters", "metrics"}).items():
        typer.echo(f"{key:>16}: {value if value is not None else '-'}")
    for section in ("hyperparameters", "metrics"):
        typer.echo(f"{section}:")
        for key, value in getattr(record, section).items():
            typer.echo(f"  {key}: {value}")


@adapters_app.command("export")
def export_command(
    reference: ReferenceArgument,
    out_dir: Annotated[Path, typer.Argument(help="A new or empty folder.")],
    as_json: JsonOption = False,
) -> None:
    """Copy an adapter's PEFT folder and GGUF, with a provenance.json, into OUT_DIR."""
    with Store() as store:
        try:
            exported = export_adapter(store, reference, out_dir)
        except (NotFound, AdapterError, OSError) as error:
            raise fail(str(error))
    if as_json:
        files = sorted(str(path.relative_to(exported)) for path in exported.rglob("*") if path.is_file())
        emit_json({"exported": str(exported), "files": files})
        return
    typer.echo(f"exported {reference} to {exported}")


@adapters_app.command("delete")
def delete_command(reference: ReferenceArgument, as_json: JsonOption = False) -> None:
    """Delete NAME@vN, or every version of NAME: the records and their files."""
    with Store() as store:
        try:
            deleted = delete_adapter(store, reference)
        except (NotFound, AdapterError, StoreError, OSError) as error:
            raise fail(str(error))
    if as_json:
        emit_json({"deleted": [record.reference for record in deleted]})
        return
    for record in deleted:
        typer.echo(f"deleted {record.reference}")
