"""Import finished episodes: Sotopia's EpisodeLog rows, Sotopia's episode files, our own
exports (either layout) and the hand-written expert corpus.

Every imported episode becomes an ordinary one: status finished, its turns with their actions,
each turn's prompt rebuilt as the agent would have seen it (prompts.messages_for_turn over the
agent's own view), the models named as in the file, and a terminal evaluation from the file's
rewards and reasoning. A score the file lacks stays missing: Sotopia's bare-float reward (its
mark of a failed evaluation) becomes a failure with its reason, never a 0.

Ids are stable: an episode keeps its source id (the expert corpus gets "expert-<episode id>"),
so importing the same file again adds nothing. Each episode is written in one transaction, so
a killed import never leaves half an episode. A bad row is skipped with its file, line and
field; the other rows are imported.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .dataset.export import ENVIRONMENT
from .episode import (
    ActionType,
    AgentAction,
    AgentEvaluation,
    DimensionScore,
    Episode,
    EpisodeStatus,
    Evaluation,
    Turn,
)
from .errors import SotopiaError
from .judge import overall_score
from .library import expert_corpus
from .library.sotopia_io import SOTOPIA_FILES, FieldProblem, ImportIssue, ImportReport, import_sotopia, read_objects
from .profiles import Character, Scenario
from .prompts import messages_for_turn
from .store import NotFound, Store
from .visibility import agent_view

SOTOPIA_MAX_TURNS = 20
EXPERT_ID_PREFIX = "expert-"
EXPERT_JUDGE = expert_corpus.EXPERT_MODEL
UNKNOWN_MODEL = "unknown"
NO_EVALUATION = "no terminal evaluation"  # what our export writes for an episode never judged


class EpisodeImportReport(BaseModel):
    """What an import did: episodes added, episodes already in the store, rows skipped."""

    imported: int = 0
    already_present: int = 0
    episode_ids: list[str] = Field(default_factory=list, description="ids of the episodes added")
    profiles: ImportReport | None = Field(default=None, description="Sotopia profiles imported first, if any")
    errors: list[ImportIssue] = Field(default_factory=list)
    warnings: list[ImportIssue] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and (self.profiles is None or self.profiles.ok)


class EpisodeImportError(SotopiaError, ValueError):
    """The path cannot be imported at all (it does not exist, or holds nothing to import)."""


# -- reading a row ------------------------------------------------------------------------


class SourceEpisode(BaseModel):
    """One episode row, in EpisodeLog terms whichever layout it came in."""

    pk: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    agents: list[str] = Field(min_length=2, max_length=2)
    tag: str | None = None
    models: list[str] | None = None
    messages: list[list[list[str]]]
    reasoning: str = ""
    rewards: list[Any] = Field(min_length=2, max_length=2)


# Sotopia's episode-file field -> the EpisodeLog field it holds.
EPISODE_FILE_FIELDS = {
    "episode_id": "pk",
    "environment_id": "environment",
    "agent_ids": "agents",
    "experiment_tag": "tag",
    "experiment_model_name_pairs": "models",
    "raw_messages": "messages",
    "raw_rewards": "rewards",
    "reasoning": "reasoning",
}
LAYOUT_EPISODELOG = "episodelog"
LAYOUT_EPISODE_FILE = "sotopia-episodes"


def row_layout(row: dict) -> str:
    if "episode_id" in row:
        return LAYOUT_EPISODE_FILE
    if "pk" in row or "messages" in row:
        return LAYOUT_EPISODELOG
    raise FieldProblem(
        None,
        "neither a Sotopia EpisodeLog row (pk, environment, agents, messages, ...) nor a row of "
        "Sotopia's episode file (episode_id, environment_id, agent_ids, raw_messages, ...)",
    )


def _file_field(layout: str, field: str) -> str:
    """The name the row's own layout gives one of our EpisodeLog fields."""
    if layout == LAYOUT_EPISODE_FILE:
        for theirs, ours in EPISODE_FILE_FIELDS.items():
            if ours == field:
                return theirs
    return field


def read_source(row: dict) -> tuple[str, SourceEpisode]:
    """(layout, episode) from one JSON row; FieldProblem names the row's own field."""
    layout = row_layout(row)
    if layout == LAYOUT_EPISODE_FILE:
        if "raw_messages" not in row:
            raise FieldProblem(
                "raw_messages",
                "missing: only Sotopia's episode files with raw messages can be imported (older "
                "files with only social_interactions text have no per-turn actions)",
            )
        data = {ours: row[theirs] for theirs, ours in EPISODE_FILE_FIELDS.items() if theirs in row}
    else:
        data = dict(row)
    try:
        return layout, SourceEpisode.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        loc = [str(part) for part in problem["loc"]]
        field = _file_field(layout, loc[0]) + "".join(f"[{part}]" for part in loc[1:]) if loc else None
        raise FieldProblem(field, problem["msg"].removeprefix("Value error, ")) from None


# -- actions and turns --------------------------------------------------------------------

_SAID = 'said: "'
_PREFIXED = {
    "[non-verbal communication] ": ActionType.non_verbal,
    "[action] ": ActionType.action,
}
_PLAIN = {"did nothing": ActionType.none, "left the conversation": ActionType.leave}


def parse_natural_action(text: str) -> AgentAction:
    """An action from Sotopia's natural-language rendering (AgentAction.to_natural_language)."""
    if text.strip() in _PLAIN:
        return AgentAction(action_type=_PLAIN[text.strip()])
    if text.startswith(_SAID) and text.endswith('"') and len(text) > len(_SAID):
        return AgentAction(action_type=ActionType.speak, argument=text[len(_SAID) : -1])
    for prefix, action_type in _PREFIXED.items():
        if text.startswith(prefix):
            return AgentAction(action_type=action_type, argument=text[len(prefix) :])
    raise ValueError(
        f"cannot read the action {text[:60]!r}: expected 'said: \"...\"', '[non-verbal communication] ...', "
        "'[action] ...', 'did nothing' or 'left the conversation'"
    )


def _step_actions(step: list[list[str]], names: Sequence[str], where: str) -> list[tuple[int, AgentAction]]:
    actions = []
    for position, entry in enumerate(step):
        if len(entry) != 3:
            raise FieldProblem(f"{where}[{position}]", f"expected [sender, receiver, text], got {entry!r}"[:160])
        sender, receiver, text = entry
        if receiver != ENVIRONMENT or sender == ENVIRONMENT:
            continue  # an observation sent to an agent
        if sender not in names:
            raise FieldProblem(f"{where}[{position}]", f"sender {sender!r} is neither {names[0]!r} nor {names[1]!r}")
        try:
            actions.append((names.index(sender), parse_natural_action(text)))
        except ValueError as error:
            raise FieldProblem(f"{where}[{position}]", str(error)) from None
    return actions


def turns_from_messages(
    episode_id: str, messages: list[list[list[str]]], names: Sequence[str], models: Sequence[str], messages_field: str
) -> list[Turn]:
    """One turn per step that holds actions. A step where nobody acted is an idle turn of the
    agent whose turn it was (round-robin); two real actions in one step cannot be a turn."""
    turns: list[Turn] = []
    for step_index, step in enumerate(messages):
        where = f"{messages_field}[{step_index}]"
        actions = _step_actions(step, names, where)
        if not actions:
            continue  # the closing observations
        acted = [(side, action) for side, action in actions if action.action_type != ActionType.none]
        if len(acted) > 1:
            raise FieldProblem(where, "both agents acted in one step; only turn-by-turn episodes can be imported")
        if acted:
            side, action = acted[0]
        else:
            side = actions[0][0] if len(actions) == 1 else len(turns) % 2
            action = AgentAction(action_type=ActionType.none)
        turns.append(
            Turn(
                episode_id=episode_id,
                index=len(turns),
                agent=side,
                action_type=action.action_type,
                argument=action.argument,
                model=models[side],
            )
        )
    return turns


def add_prompts(turns: list[Turn], scenario: Scenario, characters: tuple[Character, Character]) -> None:
    """Give each turn the prompt its agent would have seen before acting."""
    names = [character.name for character in characters]
    views = [agent_view(scenario, characters, side) for side in (0, 1)]
    for index, turn in enumerate(turns):
        side = turn.agent
        turn.prompt = messages_for_turn(names[side], views[side], turns[:index], names, side)


def end_reason(turns: Sequence[Turn], names: Sequence[str], max_turns: int) -> str:
    if turns and turns[-1].action_type == ActionType.leave:
        return f"{names[turns[-1].agent]} left the conversation"
    if len(turns) >= max_turns:
        return f"reached the turn limit ({max_turns})"
    if len(turns) >= 2 and all(turn.action_type == ActionType.none for turn in turns[-2:]):
        return "the conversation went stale (idle turns in a row)"
    return "the source file ends here"


# -- evaluation -----------------------------------------------------------------------------

_AGENT_HEADER = re.compile(r"^Agent ([12])\b(?:.*?)(?:: not scored \((?P<failure>.*)\)| comments:)\s*$")
_COMMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_ ]*?):\s?(.*)$")


class AgentComments(BaseModel):
    failure: str | None = None
    reasoning: dict[str, str] = Field(default_factory=dict)


def parse_reasoning(reasoning: str, dimensions: Sequence[set[str]]) -> list[AgentComments]:
    """Per-agent comments from a reasoning text: an "Agent N ... comments:" header (or our
    "Agent N (name): not scored (reason)") followed by "dimension: text" lines; a line that
    starts no dimension continues the previous one."""
    comments = [AgentComments(), AgentComments()]
    side: int | None = None
    current: str | None = None
    for line in reasoning.split("\n"):
        header = _AGENT_HEADER.match(line)
        if header:
            side, current = int(header.group(1)) - 1, None
            comments[side].failure = header.group("failure")
            continue
        if side is None:
            continue
        comment = _COMMENT.match(line)
        if comment and comment.group(1) in dimensions[side]:
            current = comment.group(1)
            comments[side].reasoning[current] = comment.group(2)
        elif current is not None:
            comments[side].reasoning[current] += "\n" + line
    return comments


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldProblem(field, f"expected a number, got {value!r}"[:120])
    return float(value)


def _agent_scores(reward: Any, field: str, warnings: list[str]) -> tuple[float | None, dict[str, float]] | None:
    """(overall, {dimension: score}) from one reward entry; None for Sotopia's bare float."""
    if isinstance(reward, int | float) and not isinstance(reward, bool):
        return None
    if not isinstance(reward, list | tuple) or len(reward) != 2 or not isinstance(reward[1], dict):
        raise FieldProblem(field, "expected [overall, {dimension: score}] or a number")
    overall = None if reward[0] is None else _number(reward[0], f"{field}[0]")
    scores: dict[str, float] = {}
    for name, value in reward[1].items():
        if name == "overall_score" or value is None:
            continue  # a dimension without a score stays without one
        scores[name] = _number(value, f"{field}[1].{name}")
        if not scores[name].is_integer():
            warnings.append(f"{field}[1].{name}: {value} is not a whole number; stored as {round(value)}")
    return overall, scores


def evaluation_from_rewards(
    episode_id: str,
    rewards: list[Any],
    reasoning: str,
    judge_model: str,
    after_turn: int,
    rewards_field: str,
    warnings: list[str],
) -> Evaluation | None:
    """A terminal evaluation from a file's rewards; None when neither agent was ever judged."""
    parsed = [_agent_scores(reward, f"{rewards_field}[{side}]", warnings) for side, reward in enumerate(rewards)]
    dimensions = [set(entry[1]) if entry else set() for entry in parsed]
    comments = parse_reasoning(reasoning, dimensions)
    agents: list[AgentEvaluation] = []
    for side, entry in enumerate(parsed):
        if entry is None:
            failure = comments[side].failure or (
                f"no scores in the source (reward {rewards[side]!r}, Sotopia's mark of a failed evaluation)"
            )
            agents.append(AgentEvaluation(failure=failure))
            continue
        overall, scores = entry
        agents.append(
            AgentEvaluation(
                scores={
                    name: DimensionScore(score=round(value), reasoning=comments[side].reasoning.get(name, ""))
                    for name, value in scores.items()
                },
                overall=overall,
                failure=comments[side].failure,
            )
        )
    if all(agent.failure == NO_EVALUATION for agent in agents):
        return None
    return Evaluation(
        episode_id=episode_id,
        kind="terminal",
        after_turn=after_turn,
        judge_model=judge_model,
        agents=agents,
    )


# -- writing one episode ------------------------------------------------------------------


def episode_exists(store: Store, episode_id: str) -> bool:
    return store.has_episode(episode_id)


def insert_episode(store: Store, episode: Episode, turns: Sequence[Turn], evaluation: Evaluation | None) -> bool:
    """Write an episode with its turns, tags and evaluation in one transaction. False (and
    nothing written) when an episode with that id is already stored."""
    return store.add_finished_episode(episode, turns, evaluation)


# -- Sotopia rows -------------------------------------------------------------------------


def _cast(store: Store, source: SourceEpisode, layout: str) -> tuple[Scenario, tuple[Character, Character]]:
    try:
        scenario = store.scenario(source.environment)
    except NotFound:
        raise FieldProblem(
            _file_field(layout, "environment"),
            f"unknown scenario {source.environment!r}: import its profile first (sotopia-pi import-sotopia "
            f"DIR, or put {SOTOPIA_FILES['scenarios']} beside the episode files)",
        ) from None
    characters = []
    for slot, character_id in enumerate(source.agents):
        try:
            characters.append(store.character(character_id))
        except NotFound:
            raise FieldProblem(
                f"{_file_field(layout, 'agents')}[{slot}]",
                f"unknown character {character_id!r}: import its profile first (sotopia-pi import-sotopia "
                f"DIR, or put {SOTOPIA_FILES['characters']} beside the episode files)",
            ) from None
    return scenario, (characters[0], characters[1])


def _models(source: SourceEpisode) -> tuple[str, list[str]]:
    """(judge, [agent 1, agent 2]) from Sotopia's [evaluator, agent 1, agent 2] list."""
    models = list(source.models or [])
    if len(models) == 3:
        return models[0], models[1:]
    if len(models) == 2:
        return "", models
    return "", [UNKNOWN_MODEL, UNKNOWN_MODEL]


def episode_from_source(
    store: Store, source: SourceEpisode, layout: str, origin: dict, warnings: list[str]
) -> tuple[Episode, list[Turn], Evaluation | None]:
    scenario, characters = _cast(store, source, layout)
    names = [character.name for character in characters]
    judge, agent_models = _models(source)
    turns = turns_from_messages(source.pk, source.messages, names, agent_models, _file_field(layout, "messages"))
    add_prompts(turns, scenario, characters)
    max_turns = max(SOTOPIA_MAX_TURNS, len(turns))
    episode = Episode(
        id=source.pk,
        scenario_id=scenario.id,
        agent_ids=list(source.agents),
        agent_models=agent_models,
        judge_model=judge,
        status=EpisodeStatus.finished,
        max_turns=max_turns,
        live_eval=False,
        end_reason=end_reason(turns, names, max_turns),
        tags=[tag for tag in (source.tag or "").split(",") if tag],
        settings={"imported_from": origin},
    )
    evaluation = evaluation_from_rewards(
        source.pk,
        source.rewards,
        source.reasoning,
        judge,
        turns[-1].index if turns else -1,
        _file_field(layout, "rewards"),
        warnings,
    )
    return episode, turns, evaluation


def _issue(file: str, line: int | None, field: str | None, message: str) -> ImportIssue:
    return ImportIssue(file=file, line=line, field=field, message=message)


def import_episode_file(store: Store, path: Path | str, report: EpisodeImportReport | None = None) -> EpisodeImportReport:
    """Import every episode row of one JSONL file (either Sotopia layout, or our export)."""
    path = Path(path)
    report = report or EpisodeImportReport()
    read_issues = ImportReport()  # lines that are not JSON objects
    for line, row in read_objects(path, read_issues):
        warnings: list[str] = []
        try:
            layout, source = read_source(row)
            if episode_exists(store, source.pk):
                report.already_present += 1
                continue
            origin = {"format": layout, "file": path.name, "line": line, "source_id": source.pk}
            episode, turns, evaluation = episode_from_source(store, source, layout, origin, warnings)
        except FieldProblem as problem:
            report.errors.append(_issue(path.name, line, problem.field, problem.message))
            continue
        report.warnings += [_issue(path.name, line, None, warning) for warning in warnings]
        _record(report, insert_episode(store, episode, turns, evaluation), episode.id)
    report.errors += read_issues.errors
    return report


def _record(report: EpisodeImportReport, added: bool, episode_id: str) -> None:
    if added:
        report.imported += 1
        report.episode_ids.append(episode_id)
    else:
        report.already_present += 1


# -- the expert corpus --------------------------------------------------------------------


def _load_corpus_files(directory: Path, report: EpisodeImportReport) -> list[expert_corpus.CorpusEpisode]:
    """The corpus; when some files have problems, the good files still load (each file is
    checked on its own) and the problems are reported."""
    try:
        return expert_corpus.load_corpus(directory)
    except expert_corpus.CorpusError as error:
        if not sorted(directory.glob("*.json")):
            raise EpisodeImportError(str(error)) from None
    episodes: list[expert_corpus.CorpusEpisode] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.json")):
        with tempfile.TemporaryDirectory() as single:
            shutil.copy(path, Path(single) / path.name)
            try:
                loaded = expert_corpus.load_corpus(single)
            except expert_corpus.CorpusError as error:
                report.errors.append(_issue(path.name, None, None, str(error)))
                continue
        for item in loaded:
            if item.episode.id in seen:
                report.errors.append(_issue(path.name, None, "id", f"duplicate episode id {item.episode.id!r}"))
                continue
            seen.add(item.episode.id)
            episodes.append(item)
    return episodes


def expert_tags(item: expert_corpus.CorpusEpisode) -> list[str]:
    tags = [expert_corpus.EXPERT_TAG, f"quality:{item.episode.quality}", f"split:{item.split}"]
    if item.episode.flaw:
        tags.append(f"flaw:{item.episode.flaw}")
    return tags


def expert_evaluation(episode_id: str, item: expert_corpus.CorpusEpisode, after_turn: int) -> Evaluation:
    agents = []
    for judgment in item.episode.evaluation:
        scores = {name: DimensionScore(score=value.score, reasoning=value.reasoning) for name, value in judgment.items()}
        agents.append(AgentEvaluation(scores=scores, overall=overall_score(scores)))
    return Evaluation(
        episode_id=episode_id, kind="terminal", after_turn=after_turn, judge_model=EXPERT_JUDGE, agents=agents
    )


def expert_episode(
    store: Store, item: expert_corpus.CorpusEpisode, scenario_ids: dict[str, str]
) -> tuple[Episode, list[Turn], Evaluation]:
    """One corpus episode as a stored episode; `scenario_ids` maps library codenames to ids."""
    try:
        scenario = store.scenario(scenario_ids.get(item.scenario, item.scenario))
    except NotFound as error:
        raise FieldProblem("scenario", f"{error}; is the library installed?") from None
    try:
        characters = (store.character(item.episode.agents[0]), store.character(item.episode.agents[1]))
    except NotFound as error:
        raise FieldProblem("agents", f"{error}; is the library installed?") from None
    episode_id = EXPERT_ID_PREFIX + item.episode.id
    names = [character.name for character in characters]
    models = [expert_corpus.EXPERT_MODEL, expert_corpus.EXPERT_MODEL]
    turns = [
        Turn(
            episode_id=episode_id,
            index=index,
            agent=index % 2,
            action_type=turn.action_type,
            argument=turn.argument,
            model=models[index % 2],
        )
        for index, turn in enumerate(item.episode.turns)
    ]
    add_prompts(turns, scenario, characters)
    left = turns[-1].action_type == ActionType.leave
    max_turns = expert_corpus.MAX_TURNS if left else len(turns)
    episode = Episode(
        id=episode_id,
        scenario_id=scenario.id,
        agent_ids=list(item.episode.agents),
        agent_models=models,
        judge_model=EXPERT_JUDGE,
        status=EpisodeStatus.finished,
        max_turns=max_turns,
        live_eval=False,
        end_reason=end_reason(turns, names, max_turns),
        tags=expert_tags(item),
        settings={"imported_from": {"format": "expert-corpus", "file": item.file, "source_id": item.episode.id}},
    )
    return episode, turns, expert_evaluation(episode_id, item, turns[-1].index)


def import_expert_corpus(store: Store, directory: Path | str | None = None) -> EpisodeImportReport:
    """Import the expert corpus (the built-in one by default) over the installed library."""
    from .library import ensure_library, load_library

    ensure_library(store)
    scenario_ids = {scenario.codename: scenario.id for scenario in load_library().scenarios}
    directory = Path(directory) if directory else expert_corpus.corpus_dir()
    report = EpisodeImportReport()
    for item in _load_corpus_files(directory, report):
        try:
            episode, turns, evaluation = expert_episode(store, item, scenario_ids)
        except FieldProblem as problem:
            report.errors.append(_issue(item.file, None, problem.field, f"{item.episode.id}: {problem.message}"))
            continue
        _record(report, insert_episode(store, episode, turns, evaluation), episode.id)
    return report


# -- any path -----------------------------------------------------------------------------


def _install_library(store: Store, report: EpisodeImportReport) -> None:
    from .library import LibraryError, ensure_library

    try:
        ensure_library(store)
    except LibraryError as error:
        report.warnings.append(_issue("library", None, None, f"the built-in library did not load: {error}"))


def is_expert_corpus_dir(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.json")) and not any(directory.glob("*.jsonl"))


def import_episodes(store: Store, path: Path | str) -> EpisodeImportReport:
    """Import a JSONL file of episodes, or a folder: an expert-corpus folder (*.json), or a
    folder of JSONL files whose Sotopia profile files (if any) are imported first."""
    path = Path(path)
    if not path.exists():
        raise EpisodeImportError(f"{path} does not exist")
    if is_expert_corpus_dir(path):
        return import_expert_corpus(store, path)
    report = EpisodeImportReport()
    _install_library(store, report)  # episodes played on library scenarios name library ids
    if path.is_file():
        return import_episode_file(store, path, report)
    profile_files = set(SOTOPIA_FILES.values())
    if any((path / name).is_file() for name in profile_files):
        report.profiles = import_sotopia(store, path)
        report.profiles.errors = [issue for issue in report.profiles.errors if "file not found" not in issue.message]
    episode_files = sorted(p for p in path.glob("*.jsonl") if p.name not in profile_files)
    if not episode_files:
        raise EpisodeImportError(f"{path} holds no episode files (*.jsonl besides Sotopia's profile files)")
    for file in episode_files:
        import_episode_file(store, file, report)
    return report
