"""`run`, `resume` and `episodes`: playing episodes and reading them back."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Annotated

import typer

from .. import episode_list
from ..backends import BackendError, ModelNameError, parse_model_name
from ..casting import choose_characters
from ..episode import ACTION_TYPES, ActionType, AgentAction, ChatMessage, Episode, EpisodeStatus, Turn
from ..episode_list import EpisodeFilter
from ..errors import SotopiaError
from ..runner import DEFAULT_ASK_AGAIN, EpisodeError, EpisodeSetup, RunnerEvents, new_episode
from ..session import RunnerSession
from ..store import NotFound, Store
from ..store.leases import EpisodeBusy, pause_interrupted
from .app import app, emit_json, fail, open_store, progress, user_settings

episodes_app = typer.Typer(help="Stored episodes.", no_args_is_help=True)
app.add_typer(episodes_app, name="episodes")


class ProgressEvents(RunnerEvents):
    """One line per turn on stderr, so a long run shows it is alive."""

    def __init__(self, names: tuple[str, str], judged: bool):
        self.names = names
        self.judged = judged

    def turn_committed(self, turn: Turn) -> None:
        who = self.names[turn.agent] + (" (you)" if turn.by_human else "")
        progress(
            f"turn {turn.index:>2}  {who}: {turn.action.to_natural_language()}"
            f"  [{turn.latency_ms / 1000:.1f}s, {turn.completion_tokens} tok]"
        )

    def status_changed(self, episode: Episode) -> None:
        if episode.status == EpisodeStatus.finished:
            scoring = "; the judge is scoring it..." if self.judged else " (no judge)"
            progress(f"episode over: {episode.end_reason}{scoring}")


def read_action_from_stdin(messages: list[ChatMessage]) -> AgentAction:
    """A person's turn on the command line: `speak: text`, `leave`, or just the words to say."""
    progress("\n" + messages[-1].content.split("\n\nYou are at Turn #")[0])
    progress(f"Your move ({' | '.join(ACTION_TYPES)}); write `type: argument` or just what you say:")
    line = sys.stdin.readline()
    if not line:
        return AgentAction(action_type=ActionType.leave)
    kind, sep, argument = line.strip().partition(":")
    if sep and kind.strip().lower() in ACTION_TYPES:
        return AgentAction(action_type=ActionType(kind.strip().lower()), argument=argument.strip())
    if line.strip().lower() in ACTION_TYPES:
        return AgentAction(action_type=ActionType(line.strip().lower()))
    return AgentAction(action_type=ActionType.speak, argument=line.strip())


def episode_document(store: Store, episode: Episode) -> dict:
    """The JSON shape of one episode, as `run --json` and `episodes show --json` print it."""
    characters = [store.character(cid) for cid in episode.agent_ids]
    evaluation = store.terminal_evaluation(episode.id)
    return {
        "id": episode.id,
        "status": episode.status.value,
        "scenario_id": episode.scenario_id,
        "agents": [
            {"side": side + 1, "character_id": c.id, "name": c.name, "model": episode.agent_models[side]}
            for side, c in enumerate(characters)
        ],
        "judge_model": episode.judge_model,
        "max_turns": episode.max_turns,
        "end_reason": episode.end_reason,
        "last_error": episode.last_error,
        "created_at": episode.created_at,
        "tags": episode.tags,
        "turns": [
            {
                "index": t.index,
                "agent": t.agent + 1,
                "name": characters[t.agent].name,
                "action_type": t.action_type.value,
                "argument": t.argument,
                "by_human": t.by_human,
                "model": t.model,
                "latency_ms": round(t.latency_ms, 1),
                "prompt_tokens": t.prompt_tokens,
                "cached_tokens": t.cached_tokens,
                "completion_tokens": t.completion_tokens,
                "parse_note": t.parse_note,
                "refused": t.refused,
                "echoes": t.echoes,
                "role_slip": t.role_slip,
            }
            for t in store.turns(episode.id)
        ],
        "evaluation": evaluation_document(evaluation, characters) if evaluation else None,
        "provisional_evaluations": len(store.evaluations(episode.id, kind="provisional")),
    }


def evaluation_document(evaluation, characters) -> dict:
    agents = []
    for side, result in enumerate(evaluation.agents):
        entry: dict = {"agent": side + 1, "name": characters[side].name}
        if result.ok:
            entry["scores"] = {
                name: {"score": s.score, "reasoning": s.reasoning} for name, s in result.scores.items()
            }
            entry["overall"] = round(result.overall, 3)
        else:
            entry["failure"] = result.failure
        agents.append(entry)
    return {
        "kind": evaluation.kind,
        "judge_model": evaluation.judge_model,
        "dimension_set": evaluation.dimension_set,
        "after_turn": evaluation.after_turn,
        "latency_ms": round(evaluation.latency_ms, 1),
        "agents": agents,
    }


INTERRUPT_GRACE_S = 3.0  # how long a signal waits for the turn in progress to be cancelled


def play_session(session: RunnerSession) -> Episode:
    """Play in the session's thread until it pauses or ends; a signal here (Ctrl-C, SIGTERM,
    SIGHUP) cancels the turn in progress (a model's, at once) and leaves the episode paused."""
    try:
        with signals_as_interrupts():
            session.start()
            while not session.wait(0.2):
                pass
    except KeyboardInterrupt:
        reading_stdin = session.current is not None and session.current.by_human
        session.close(wait=False)
        # A model's turn stops within a token; a read from stdin, or a call that never looks
        # at the cancel, does not: the process leaves without it.
        if reading_stdin or not session.wait(INTERRUPT_GRACE_S):
            session.abandon()
        raise
    if session.error is not None:
        raise session.error
    return session.episode


def play(store: Store, session: RunnerSession, as_json: bool) -> None:
    session.events = ProgressEvents(session.runner.names, judged=bool(session.episode.judge_model))
    names, models = session.runner.names, [spec.name for spec in session.specs]
    progress(
        f"episode {session.episode.id}: {names[0]} ({models[0]}) and "
        f"{names[1]} ({models[1]}); judge: {session.episode.judge_model or 'none'}"
    )
    try:
        episode = play_session(session)
    except KeyboardInterrupt:
        pause_interrupted(store, session.episode.id, "stopped by a signal (Ctrl-C, SIGTERM or SIGHUP)")
        episode = store.episode(session.episode.id)
        progress(f"interrupted; the turns played are saved. Continue with: sotopia-pi resume {episode.id}")
        raise typer.Exit(130)
    except SotopiaError as error:  # the episode is busy elsewhere, its record went away
        raise fail(str(error))
    finally:
        session.close()
    report(store, episode, as_json)
    if episode.status == EpisodeStatus.paused and episode.last_error:
        progress(f"error: {episode.last_error}")
        progress(f"the episode is paused with {len(store.turns(episode.id))} turns saved; "
                 f"continue it with: sotopia-pi resume {episode.id}")
        raise typer.Exit(2)


@contextmanager
def signals_as_interrupts():
    """SIGTERM and SIGHUP stop a run the way Ctrl-C does: the episode is paused, not left
    `running` (only in the main thread, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    kept = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def report(store: Store, episode: Episode, as_json: bool) -> None:
    if as_json:
        emit_json(episode_document(store, episode))
    else:
        print_summary(store, episode)


def print_summary(store: Store, episode: Episode) -> None:
    document = episode_document(store, episode)
    typer.echo(f"episode {episode.id}  status: {episode.status.value}  {episode.end_reason}")
    for turn in document["turns"]:
        typer.echo(f"  {turn['index']:>2} {turn['name']}: {turn['action_type']} {turn['argument']}")
    evaluation = document["evaluation"]
    if evaluation:
        typer.echo(f"terminal scores (judge: {evaluation['judge_model']}):")
        for agent in evaluation["agents"]:
            if "failure" in agent:
                typer.echo(f"  {agent['name']}: judge failed: {agent['failure']}")
            else:
                scores = ", ".join(f"{k} {v['score']}" for k, v in agent["scores"].items())
                typer.echo(f"  {agent['name']}: overall {agent['overall']:.2f}  ({scores})")


@app.command()
def run(
    scenario: Annotated[str, typer.Option(help="scenario id or codename")],
    pairing: Annotated[str | None, typer.Option(help="pairing id (which two characters play)")] = None,
    characters: Annotated[str | None, typer.Option(help="two character names or ids, comma-separated")] = None,
    agent1: Annotated[
        str | None, typer.Option(help="model for side 1 (`human` to play it yourself) [default: from settings]")
    ] = None,
    agent2: Annotated[str | None, typer.Option(help="model for side 2 [default: from settings]")] = None,
    judge: Annotated[
        str | None, typer.Option(help="judge model; empty for no judge [default: from settings]")
    ] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, help="[default: from settings]")] = None,
    live_eval: Annotated[
        bool | None, typer.Option("--live-eval/--no-live-eval", help="[default: from settings]")
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.7,
    ask_again: Annotated[
        int, typer.Option(min=0, help="times a model is asked again for a line that repeats an earlier one or slips out of role (0: never)")
    ] = DEFAULT_ASK_AGAIN,
    tag: Annotated[list[str] | None, typer.Option(help="tag the episode (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the episode as one JSON document")] = False,
) -> None:
    """Play one episode of a scenario and score it. Options left out take the values the
    settings file (the TUI's Settings screen) and SOTOPIA_PI_* variables give."""
    settings = user_settings()
    with open_store() as store:
        try:
            found = store.scenario(scenario)
            setup = EpisodeSetup(
                scenario_id=found.id,
                agent_ids=choose_characters(store, found.id, pairing, characters),
                agent_models=(
                    settings.agent1_model if agent1 is None else agent1,
                    settings.agent2_model if agent2 is None else agent2,
                ),
                judge_model=settings.judge_model if judge is None else judge,
                max_turns=settings.max_turns if max_turns is None else max_turns,
                live_eval=settings.live_eval if live_eval is None else live_eval,
                temperature=temperature,
                ask_again=ask_again,
                tags=tuple(tag or ()),
            )
            episode = new_episode(store, setup)
        except SotopiaError as error:
            raise fail(str(error))
        session = RunnerSession(store, episode.id, person_input=read_action_from_stdin)
        try:
            session.runner.load_models()
        except BackendError as error:
            session.close()
            store.delete_episode(episode.id)  # nothing was played: keep no trace of it
            raise fail(f"cannot load a model: {error}")
        play(store, session, as_json)


@app.command()
def resume(
    episode_id: Annotated[str, typer.Argument(help="episode id (a unique prefix is enough)")],
    agent1: Annotated[str | None, typer.Option(help="switch side 1 to another model")] = None,
    agent2: Annotated[str | None, typer.Option(help="switch side 2 to another model")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Continue a paused or interrupted episode from its last saved turn."""
    with open_store() as store:
        _resume(store, episode_id, (agent1, agent2), as_json)


def _resume(store: Store, episode_id: str, switches: tuple[str | None, str | None], as_json: bool) -> None:
    try:
        episode = store.episode(episode_id)
        wanted = [parse_model_name(model) if model else None for model in switches]
    except (NotFound, ModelNameError) as error:
        raise fail(str(error))
    terminal = store.terminal_evaluation(episode.id)
    if episode.status == EpisodeStatus.finished and terminal is not None:
        progress(f"episode {episode.id} is already finished")
        if not terminal.ok:
            progress(f"its official score failed; judge it again with: sotopia-pi judge {episode.id}")
        report(store, episode, as_json)
        return
    session = RunnerSession(store, episode.id, person_input=read_action_from_stdin)
    try:
        session.runner.claim()  # before anything changes: another runner may be playing it
    except EpisodeBusy as error:
        session.close()
        raise fail(str(error))
    original = session.specs
    try:
        for side, spec in enumerate(wanted):
            if spec is not None:
                session.swap_model(side, spec)
        session.runner.load_models()
    except BackendError as error:
        for side, spec in enumerate(original):  # a model that cannot load must not replace one that can
            if session.specs[side] != spec:
                session.swap_model(side, spec)
        session.close()
        raise fail(f"cannot load a model: {error}; the episode is unchanged")
    play(store, session, as_json)


@app.command("judge")
def judge_again(
    episode_id: Annotated[str, typer.Argument(help="episode id (a unique prefix is enough)")],
    judge: Annotated[str | None, typer.Option(help="judge with this model instead of the episode's")] = None,
    force: Annotated[bool, typer.Option("--force", help="judge again even if the official score is fine")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Judge a finished episode again (its official score failed); the failure stays on record."""
    from ..rejudge import rejudge_episode

    with open_store() as store:
        try:
            evaluation = rejudge_episode(store, episode_id, judge_model=judge, force=force)
            episode = store.episode(episode_id)
        except (NotFound, EpisodeError, EpisodeBusy, ModelNameError) as error:
            raise fail(str(error))
        earlier = len(store.evaluations(episode.id, kind="terminal")) - 1
        progress(f"episode {episode.id} judged again by {evaluation.judge_model}; "
                 f"{earlier} earlier terminal evaluation(s) kept on record")
        report(store, episode, as_json)
        if not evaluation.ok:
            failures = "; ".join(dict.fromkeys(a.failure for a in evaluation.agents if a.failure))
            progress(f"error: the judge failed again: {failures}")
            raise typer.Exit(2)


@episodes_app.command("list")
def list_episodes(
    status: Annotated[EpisodeStatus | None, typer.Option()] = None,
    scenario: Annotated[str | None, typer.Option(help="scenario id or codename")] = None,
    model: Annotated[str | None, typer.Option(help="part of either side's model name")] = None,
    adapter: Annotated[str | None, typer.Option(help="part of the adapter either side played with")] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stored episodes, newest first (the list the TUI's inspector shows)."""
    with open_store() as store:
        try:
            scenario_id = store.scenario(scenario).id if scenario else ""
        except NotFound as error:
            raise fail(str(error))
        filters = EpisodeFilter(
            status=status, scenario_id=scenario_id, model=model or "", adapter=adapter or "", tag=tag or ""
        )
        rows = episode_list.list_episodes(store, filters, limit=limit)
    if as_json:
        emit_json({"episodes": [row.model_dump(mode="json") for row in rows]})
        return
    if not rows:
        typer.echo("no episodes yet; play one with: sotopia-pi run --scenario CODENAME")
    for row in rows:
        typer.echo(
            f"{row.id}  {row.status.value:<8} {row.turn_count:>2} turns  {row.scenario}  "
            f"{row.agent_models[0]} vs {row.agent_models[1]}  {row.created_at}"
        )


@episodes_app.command("show")
def show_episode(
    episode_id: Annotated[str, typer.Argument(help="episode id (a unique prefix is enough)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One episode: its turns, timings and scores."""
    with open_store() as store:
        try:
            episode = store.episode(episode_id)
        except NotFound as error:
            raise fail(str(error))
        report(store, episode, as_json)
