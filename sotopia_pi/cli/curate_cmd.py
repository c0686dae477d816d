"""`curate` and `export`: from judged episodes to a frozen snapshot, and from a snapshot to files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..dataset.annotations import (
    add_tags,
    clear_decision,
    edit_turn,
    remove_tags,
    revert_turn,
    set_decision,
    turn_edits,
)
from ..dataset.candidates import load_candidates
from ..dataset.errors import CurationError, ExportError
from ..dataset.examples import SelectionStats, token_counter
from ..dataset.export import EPISODE_FORMATS, ExportFormat, write_export
from ..dataset.filters import FILTER_GRAMMAR, parse_filter
from ..dataset.selection import Selection, select, selection_statistics
from ..dataset.snapshots import create_snapshot, list_snapshots, load_snapshot
from ..store import Store
from .app import app, emit_json, fail

curate_app = typer.Typer(
    help="Choose which judged episodes become training data, and freeze them as snapshots.",
    no_args_is_help=True,
)
app.add_typer(curate_app, name="curate")

SideOption = Annotated[
    int | None, typer.Option("--side", min=0, max=1, help="0 = first agent, 1 = second; default: the whole episode")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document")]


def _print_stats(stats: SelectionStats) -> None:
    total = stats.total
    typer.echo(
        f"{total.sides} side(s) of {stats.episodes} episode(s): {total.examples} examples, ~{total.tokens} tokens"
    )
    for side, counts in sorted(stats.per_side.items()):
        typer.echo(f"  side {side}: {counts.sides} sides, {counts.examples} examples, {counts.tokens} tokens")
    for scenario, counts in sorted(stats.per_scenario.items()):
        typer.echo(f"  scenario {scenario}: {counts.sides} sides, {counts.examples} examples, {counts.tokens} tokens")


def _print_selection(selection: Selection) -> None:
    for line in selection.explain():
        typer.echo(f"- {line}")


@curate_app.command("select", epilog="Filters (-f, in order):\n\n" + FILTER_GRAMMAR.replace("\n", "\n\n"))
def select_command(
    filters: Annotated[list[str], typer.Option("--filter", "-f", help="a filter; repeat to chain them")] = [],  # noqa: B006 - typer's list default, never mutated
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="freeze the selection under this name")] = None,
    description: Annotated[str, typer.Option("--description", help="a note stored with the snapshot")] = "",
    show_sides: Annotated[bool, typer.Option("--list", help="list the kept sides")] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply filters and manual decisions; show what the selection would produce."""
    try:
        parsed = [parse_filter(spec) for spec in filters]
        with Store() as store:
            if snapshot is not None:
                made = create_snapshot(store, snapshot, parsed, description=description)
                manifest = made.manifest
                if as_json:
                    emit_json({"snapshot": manifest.model_dump(mode="json")})
                    return
                for step in manifest.steps:
                    typer.echo(f"- {step.explanation} ({step.before} -> {step.after} sides)")
                _print_stats(manifest.counts)
                typer.echo(f"snapshot {manifest.name} saved (digest {manifest.digest[:12]})")
                return
            candidates = load_candidates(store)
            selection = select(candidates, parsed)
            stats = selection_statistics(store, selection.kept)
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        by_key = {c.key: c for c in candidates}
        emit_json(
            {
                "candidates": len(candidates),
                "explanation": selection.explain(),
                "selection": selection.model_dump(mode="json", exclude={"kept"}),
                "kept": [by_key[key].model_dump(mode="json") for key in selection.kept],
                "stats": stats.model_dump(mode="json"),
            }
        )
        return
    typer.echo(f"{len(candidates)} candidate side(s) from finished episodes")
    _print_selection(selection)
    _print_stats(stats)
    if show_sides:
        by_key = {c.key: c for c in candidates}
        for key in selection.kept:
            c = by_key[key]
            scores = "judge failed" if not c.judged else f"goal {c.score('goal')} overall {c.overall:.2f}"
            typer.echo(f"{c.episode_id} side {c.side}  {c.scenario_id}  {c.model}  {scores}  {c.examples} examples")


def _decide(episode: str, decision: str, side: int | None, note: str, as_json: bool) -> None:
    try:
        with Store() as store:
            record = set_decision(store, episode, decision, side, note)  # type: ignore[arg-type]
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        emit_json(record)
    else:
        target = "the whole episode" if side is None else f"side {side}"
        typer.echo(f"{decision}: {target} of {record.episode_id}")


@curate_app.command("keep")
def keep_command(
    episode: Annotated[str, typer.Argument(help="episode id (or a unique prefix)")],
    side: SideOption = None,
    note: Annotated[str, typer.Option("--note")] = "",
    as_json: JsonOption = False,
) -> None:
    """Keep an episode (or one side) whatever the filters say."""
    _decide(episode, "keep", side, note, as_json)


@curate_app.command("reject")
def reject_command(
    episode: Annotated[str, typer.Argument(help="episode id (or a unique prefix)")],
    side: SideOption = None,
    note: Annotated[str, typer.Option("--note")] = "",
    as_json: JsonOption = False,
) -> None:
    """Reject an episode (or one side): no filter will select it."""
    _decide(episode, "reject", side, note, as_json)


@curate_app.command("undecide")
def undecide_command(episode: str, side: SideOption = None) -> None:
    """Forget a keep or reject decision."""
    try:
        with Store() as store:
            removed = clear_decision(store, episode, side)
    except CurationError as error:
        raise fail(str(error))
    typer.echo("decision removed" if removed else "there was no decision to remove")


@curate_app.command("tag")
def tag_command(
    episode: str,
    tags: Annotated[list[str], typer.Argument(help="one or more tags")],
    remove: Annotated[bool, typer.Option("--remove", help="remove these tags instead")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add curator tags to an episode (filter on them with -f tag:NAME)."""
    try:
        with Store() as store:
            now = remove_tags(store, episode, tags) if remove else add_tags(store, episode, tags)
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        emit_json({"episode_id": episode, "curator_tags": now})
    else:
        typer.echo("curator tags: " + (", ".join(now) or "(none)"))


@curate_app.command("edit")
def edit_command(
    episode: str,
    turn: Annotated[int, typer.Argument(help="turn index (0 is the first turn)")],
    text: Annotated[str | None, typer.Argument(help="the new text of the action's argument")] = None,
    undo: Annotated[bool, typer.Option("--undo", help="drop the edit and use the original text")] = False,
    as_json: JsonOption = False,
) -> None:
    """Edit what an agent said or did at one turn; the original is kept."""
    if (text is None) == (not undo):
        raise fail("give the new TEXT, or --undo to drop the edit")
    try:
        with Store() as store:
            record = revert_turn(store, episode, turn) if undo else edit_turn(store, episode, turn, text or "")
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        emit_json(record)
    elif undo:
        typer.echo(f"turn {turn} of {record.episode_id} is back to: {record.original}")
    else:
        typer.echo(f"turn {turn} of {record.episode_id} edited (original kept: {record.original})")


@curate_app.command("edits")
def edits_command(episode: Annotated[str | None, typer.Argument()] = None, as_json: JsonOption = False) -> None:
    """The history of turn edits."""
    try:
        with Store() as store:
            history = turn_edits(store, episode)
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        emit_json([record.model_dump(mode="json") for record in history])
        return
    for record in history:
        change = "undone" if record.edited is None else f"-> {record.edited}"
        typer.echo(f"{record.created_at}  {record.episode_id} turn {record.index}: {change}")


@curate_app.command("snapshots")
def snapshots_command(
    name: Annotated[str | None, typer.Argument(help="show this snapshot's manifest")] = None,
    as_json: JsonOption = False,
) -> None:
    """List dataset snapshots, or show one manifest."""
    try:
        with Store() as store:
            manifests = [load_snapshot(store, name).manifest] if name else list_snapshots(store)
    except CurationError as error:
        raise fail(str(error))
    if as_json:
        documents = [m.model_dump(mode="json") for m in manifests]
        emit_json(documents[0] if name else documents)
        return
    for manifest in manifests:
        total = manifest.counts.total
        typer.echo(
            f"{manifest.name}  {manifest.created_at}  {total.sides} sides  {total.examples} examples  "
            f"{manifest.counts.episodes} episodes  {manifest.description}"
        )
        if name:
            for step in manifest.steps:
                typer.echo(f"  - {step.explanation} ({step.before} -> {step.after})")


@app.command("export")
def export_command(
    snapshot: Annotated[str, typer.Argument(help="snapshot name (see `sotopia-pi curate snapshots`)")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="sft, chat, prompt-completion, episodelog or sotopia-episodes")],
    out: Annotated[Path, typer.Option("--out", help="the JSONL file to write")],
    max_prompt_tokens: Annotated[
        int | None, typer.Option("--max-prompt-tokens", min=1, help="cut the oldest dialogue lines past this")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="a local Hugging Face tokenizer folder to count tokens")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a snapshot as training data (one JSON object a line)."""
    count_tokens = token_counter(_load_tokenizer(tokenizer) if tokenizer else None)
    try:
        with Store() as store:
            loaded = load_snapshot(store, snapshot)
        report = write_export(loaded, fmt, out, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
    except (CurationError, ExportError) as error:
        raise fail(str(error))
    if as_json:
        emit_json(report)
        return
    unit = "episodes" if report.format in EPISODE_FORMATS else "examples"
    typer.echo(f"wrote {report.rows} {unit} to {report.path}")
    if report.truncated_examples:
        typer.echo(
            f"{report.truncated_examples} prompt(s) cut to {max_prompt_tokens} tokens "
            f"({report.dropped_history_lines} oldest dialogue lines dropped)"
        )


def _load_tokenizer(path: Path):
    if not path.is_dir():
        raise fail(f"--tokenizer {path}: not a folder")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise fail("--tokenizer needs transformers (pip install 'sotopia-pi[train]')")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise fail(f"--tokenizer {path}: {error}")
