"""`sotopia-pi import-episodes`: Sotopia's episode logs, our exports and the expert corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..episode_import import EpisodeImportError, EpisodeImportReport, import_episodes, import_expert_corpus
from .app import app, emit_json, fail, open_store


@app.command("import-episodes")
def import_episodes_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A JSONL file of episodes (Sotopia EpisodeLog rows, Sotopia episode files, or our "
            "episodelog / sotopia-episodes export), a folder of them (with Sotopia's profile files, "
            "imported first), or an expert-corpus folder."
        ),
    ] = None,
    expert: Annotated[bool, typer.Option("--expert", help="Import the built-in expert corpus.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")] = False,
) -> None:
    """Import finished episodes as ordinary ones (exits 1 if any row was skipped)."""
    if (path is None) == (not expert):
        raise fail("give a PATH or --expert (not both)")
    with open_store() as store:
        try:
            report = import_expert_corpus(store) if path is None else import_episodes(store, path)
        except EpisodeImportError as error:
            raise fail(str(error)) from None
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: EpisodeImportReport) -> None:
    if report.profiles is not None:
        counts = ("characters", "scenarios", "relationships", "pairings")
        typer.echo("profiles: " + ", ".join(f"{getattr(report.profiles, name)} {name}" for name in counts))
        for issue in report.profiles.errors:
            typer.secho(f"skipped {issue}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{report.imported} episodes imported, {report.already_present} already present, "
        f"{len(report.errors)} rows skipped"
    )
    for issue in report.warnings:
        typer.secho(f"note {issue}", err=True)
    for issue in report.errors:
        typer.secho(f"skipped {issue}", fg=typer.colors.YELLOW, err=True)
