"""`library check|install|export` and `generate`: the built-in scenario library and new scenarios."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer

from ..backends import BackendError, ModelNameError, create_backend
from ..library import (
    LibraryError,
    character_to_toml,
    ensure_library,
    load_library,
    scenario_to_toml,
)
from ..library.generate import (
    DEFAULT_ATTEMPTS,
    DEFAULT_SEEDS_PER_SCENARIO,
    DEFAULT_TEMPERATURE,
    GenerationError,
    generate_scenarios,
)
from ..store import NotFound, Store
from .app import app, emit_json, fail, open_store, progress, user_settings

library_app = typer.Typer(help="The built-in scenario library (scenarios/).", no_args_is_help=True)
app.add_typer(library_app, name="library")

PathOption = Annotated[
    Path | None, typer.Option("--path", help="Library folder (default: the built-in scenarios/).")
]


@library_app.command("check")
def check(
    path: PathOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load and validate the library; print its counts, or every problem with file and field."""
    try:
        library = load_library(path)
    except LibraryError as error:
        if as_json:
            emit_json({"ok": False, "errors": [str(p) for p in error.problems]})
        else:
            for problem in error.problems:
                typer.echo(str(problem), err=True)
        raise fail(f"{len(error.problems)} problem(s) in the library")
    summary = library.summary()
    corpus, corpus_problems = _check_corpus(path)
    if corpus_problems:
        if as_json:
            emit_json({"ok": False, **summary, "expert_corpus": None, "errors": corpus_problems})
        else:
            for message in corpus_problems:
                typer.echo(message, err=True)
        raise fail(f"{len(corpus_problems)} problem(s) in the expert corpus")
    if as_json:
        emit_json({"ok": True, **summary, "expert_corpus": corpus, "errors": []})
        return
    typer.echo(f"library: {summary['path']}")
    typer.echo(
        f"characters {summary['characters']}, relationships {summary['relationships']}, "
        f"scenarios {summary['scenarios']}, seed prompts {summary['seed_prompts']}"
    )
    typer.echo("scenarios per category: " + _counts(summary["scenarios_per_category"]))
    typer.echo("scenarios per level:    " + _counts(summary["scenarios_per_level"]))
    typer.echo("relationships per level: " + _counts(summary["relationships_per_level"]))
    typer.echo(
        f"fewest valid character pairs: {summary['min_valid_pairs']} ({summary['min_valid_pairs_scenario']})"
    )
    if corpus is not None:
        typer.echo(
            f"expert corpus: {corpus['episodes']} episodes ({corpus['expert']} expert, {corpus['poor']} poor) "
            f"on {corpus['scenarios']} scenarios; held out: {len(corpus['heldout_scenarios'])} scenarios, "
            f"{corpus['heldout_episodes']} episodes"
        )
    typer.echo("no problems found")


def _check_corpus(path: Path | None) -> tuple[dict | None, list[str]]:
    """The expert corpus beside the built-in library (None for another library folder)."""
    from ..library.expert_corpus import CorpusError, corpus_summary, load_corpus

    if path is not None:
        return None, []
    try:
        return corpus_summary(load_corpus()), []
    except CorpusError as error:
        return None, str(error).splitlines()[1:] or [str(error)]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


@library_app.command("install")
def install(
    path: PathOption = None,
    force: Annotated[bool, typer.Option("--force", help="Reinstall even if unchanged.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Install the library into the store (done automatically when the files change)."""
    with Store() as store:
        try:
            report = ensure_library(store, path, force=force)
        except LibraryError as error:
            raise fail(str(error))
    if as_json:
        emit_json(report.model_dump() if report else {"up_to_date": True})
    elif report is None:
        typer.echo("the library is already installed and up to date")
    else:
        typer.echo(
            f"installed {report.characters} characters, {report.relationships} relationships, "
            f"{report.scenarios} scenarios; {report.pairings_created} pairings created, "
            f"{report.pairings_removed} removed"
        )


@library_app.command("export")
def export(
    record: Annotated[str, typer.Argument(help="A scenario id or codename, or a character id.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print a stored scenario or character in the library's TOML format."""
    with open_store() as store:
        try:
            text = scenario_to_toml(store.scenario(record))
        except NotFound:
            try:
                text = character_to_toml(store.character(record))
            except NotFound:
                raise fail(f"no scenario or character {record!r} in the store")
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        progress(f"wrote {out}")


@app.command("generate")
def generate(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many scenarios to store.")] = 1,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model name (see `run --help`) [default: the settings' judge model]"),
    ] = None,
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="Answers tried per seed.")] = DEFAULT_ATTEMPTS,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds tried per scenario.")] = DEFAULT_SEEDS_PER_SCENARIO,
    temperature: Annotated[float, typer.Option("--temperature")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int | None, typer.Option("--random-seed", help="Fix the choice of seeds and examples.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored scenarios and pairings as JSON.")] = False,
) -> None:
    """Generate new scenarios from unused seed prompts (SOTOPIA-pi's procedure) and store them."""
    try:
        backend = create_backend(model or user_settings().generation_model)
    except (ModelNameError, BackendError) as error:
        raise fail(str(error))
    progress(f"generating {count} scenario(s) with {backend.name}")
    try:
        with Store() as store:
            report = generate_scenarios(
                store,
                backend,
                count,
                attempts_per_seed=attempts,
                seeds_per_scenario=seeds,
                temperature=temperature,
                rng=random.Random(seed),
                on_progress=progress,
            )
    except (GenerationError, LibraryError) as error:
        raise fail(str(error))
    finally:
        backend.close()
    if as_json:
        emit_json(
            {
                "requested": report.requested,
                "model": report.model,
                "scenarios": [g.model_dump(mode="json") for g in report.generated],
                "rejected": [a.model_dump(mode="json") for a in report.attempts if not a.accepted],
            }
        )
    else:
        for item in report.generated:
            names = ", ".join(" & ".join(p.agent_ids) for p in item.pairings)
            typer.echo(f"{item.scenario.id}  {item.scenario.codename}  [{item.scenario.category}]  pairs: {names}")
    if not report.complete:
        raise fail(f"stored {len(report.generated)} of {report.requested} scenario(s); see the rejected attempts above")
