"""Commands on profiles: SOTOPIA import/export, and listing scenarios and characters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..library.sotopia_io import SOTOPIA_HARD_SCENARIO_IDS, export_sotopia, import_sotopia
from ..profiles import Character, Scenario, valid_pairs
from ..store import NotFound, Store
from .app import app, emit_json, fail, open_store

scenarios_app = typer.Typer(help="Browse scenarios (social tasks).", no_args_is_help=True)
characters_app = typer.Typer(help="Browse characters.", no_args_is_help=True)
app.add_typer(scenarios_app, name="scenarios")
app.add_typer(characters_app, name="characters")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]

_COUNTED = ("characters", "scenarios", "relationships", "pairings")


@app.command("import-sotopia")
def import_sotopia_command(
    directory: Annotated[Path, typer.Argument(help="Folder with SOTOPIA's four profile JSONL files.")],
    as_json: JsonFlag = False,
) -> None:
    """Import SOTOPIA's characters, scenarios, relationships and pairings (exits 1 if any line was skipped)."""
    with Store() as store:
        report = import_sotopia(store, directory)
    if as_json:
        emit_json(report)
    else:
        typer.echo(", ".join(f"{getattr(report, name)} {name}" for name in _COUNTED) + " imported")
        for issue in report.errors:
            typer.secho(f"skipped {issue}", fg=typer.colors.YELLOW, err=True)
    if report.errors:
        raise typer.Exit(1)


@app.command("export-sotopia")
def export_sotopia_command(
    directory: Annotated[Path, typer.Argument(help="Folder to write SOTOPIA's four JSONL files into.")],
    as_json: JsonFlag = False,
) -> None:
    """Write every profile in SOTOPIA's JSONL format (records imported unedited come back verbatim)."""
    with Store() as store:
        try:
            report = export_sotopia(store, directory)
        except OSError as error:
            raise fail(f"cannot write to {directory}: {error}") from None
    if as_json:
        emit_json(report)
        return
    counts = ", ".join(f"{getattr(report, name)} {name}" for name in _COUNTED)
    typer.echo(f"{counts} written to {report.directory} ({report.rewritten} in SOTOPIA's conventions)")


def _matches(scenario: Scenario, text: str) -> bool:
    needle = text.lower()
    haystack = [scenario.id, scenario.codename, scenario.source, scenario.category, scenario.scenario]
    return any(needle in part.lower() for part in haystack + list(scenario.agent_goals))


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _console() -> Console:
    """A terminal gets rows cut to its width; a pipe or file gets whole rows."""
    console = Console()
    return console if console.is_terminal else Console(width=1000)


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    """A borderless table whose columns keep their full width except the last, which is cut
    to fit the terminal (ids must stay whole so they can be copied)."""
    table = Table(box=None)
    for index, column in enumerate(columns):
        if index == len(columns) - 1:
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        else:
            widest = max([len(column), *(len(row[index]) for row in rows)])
            table.add_column(column, no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


@scenarios_app.command("list")
def list_scenarios(
    search: Annotated[str | None, typer.Option(help="Only scenarios whose id, codename, source or text contains this.")] = None,
    hard: Annotated[bool, typer.Option("--hard", help="Only the 14 SOTOPIA-hard scenarios.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List scenarios."""
    with open_store() as store:
        scenarios = store.scenarios()
    if hard:
        scenarios = [s for s in scenarios if s.id in SOTOPIA_HARD_SCENARIO_IDS]
    if search:
        scenarios = [s for s in scenarios if _matches(s, search)]
    if as_json:
        emit_json(
            [
                {**s.model_dump(mode="json"), "sotopia_hard": s.id in SOTOPIA_HARD_SCENARIO_IDS}
                for s in scenarios
            ]
        )
        return
    rows = [(s.id, s.codename, s.relationship.name, s.source, _clip(s.scenario, 60)) for s in scenarios]
    _console().print(_table(("id", "codename", "relationship", "source", "scenario"), rows))
    typer.echo(f"{len(scenarios)} scenarios")


@scenarios_app.command("show")
def show_scenario(
    scenario_id: Annotated[str, typer.Argument(metavar="ID", help="Scenario id or codename.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one scenario: shared text, both goals, relationship, and the character pairs that fit it."""
    with open_store() as store:
        try:
            scenario = store.scenario(scenario_id)
        except NotFound as error:
            raise fail(str(error)) from None
        characters = {c.id: c for c in store.characters()}
        fitting = valid_pairs(scenario, characters, store.relationships())
        fixed = [p.agent_ids for p in store.pairings(scenario.id)]
    if as_json:
        emit_json(
            {
                "scenario": scenario.model_dump(mode="json"),
                "sotopia_hard": scenario.id in SOTOPIA_HARD_SCENARIO_IDS,
                "pairings": fixed,
                "fitting_pairs": [list(pair) for pair in fitting],
            }
        )
        return
    _print_scenario(scenario, characters, fitting, fixed)


def _print_scenario(
    scenario: Scenario,
    characters: dict[str, Character],
    fitting: list[tuple[str, str]],
    fixed: list[list[str]],
) -> None:
    def name(character_id: str) -> str:
        character = characters.get(character_id)
        return character.name if character else f"(unknown {character_id})"

    hard = " [SOTOPIA-hard]" if scenario.id in SOTOPIA_HARD_SCENARIO_IDS else ""
    typer.secho(f"{scenario.codename or scenario.id}{hard}", bold=True)
    typer.echo(f"id: {scenario.id}   source: {scenario.source or '-'}   relationship: {scenario.relationship.name}")
    typer.echo(f"\n{scenario.scenario}\n")
    for slot, goal in enumerate(scenario.agent_goals, start=1):
        typer.echo(f"goal of agent {slot}: {goal}")
    for label, value in (
        ("age constraint", scenario.age_constraint),
        ("occupation constraint", scenario.occupation_constraint),
        ("agent constraint", scenario.agent_constraint),
    ):
        if value is not None:
            typer.echo(f"{label}: {value}")
    typer.echo(f"\nfixed pairings ({len(fixed)}):")
    for first, second in fixed:
        typer.echo(f"  {name(first)} / {name(second)}")
    typer.echo(f"character pairs that fit ({len(fitting)}):")
    for first, second in fitting:
        typer.echo(f"  {name(first)} / {name(second)}")


@characters_app.command("list")
def list_characters(
    search: Annotated[str | None, typer.Option(help="Only characters whose id or name contains this.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List characters."""
    with open_store() as store:
        characters = store.find_characters(search) if search else store.characters()
    if as_json:
        emit_json([c.model_dump(mode="json") for c in characters])
        return
    rows = [(c.id, c.name, str(c.age or ""), c.occupation, c.gender) for c in characters]
    _console().print(_table(("id", "name", "age", "occupation", "gender"), rows))
    typer.echo(f"{len(characters)} characters")
