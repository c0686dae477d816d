"""Scenario generation, as SOTOPIA-pi does it, with any ChatBackend.

For each new scenario: take a seed prompt nobody has used yet and one existing scenario as an
example, ask the model for a new scenario (shared situation, two private goals that conflict
or complement each other, a relationship level) in a JSON schema, and check the answer: it
must parse, pass the same field rules as the built-in library, not repeat an existing
scenario, and have character pairs able to play it. A failed answer is retried a bounded
number of times and reported, never stored. A stored scenario comes with up to five
pairings, and its seed is recorded (seed, model, scenario id, time) so it is never used again.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher

from pydantic import BaseModel, Field

from ..backends import BackendError, Cancelled, ChatBackend
from ..episode import ChatMessage
from ..errors import SotopiaError
from ..model_text import read_json
from ..profiles import Character, Pairing, Relationship, RelationshipLevel, Scenario, new_id, valid_pairs
from ..store import Store
from ..store.library import claim_seed, seed_use_for_scenario, seed_uses
from ..visibility import HINT_TAG_MARKUP, HINT_TAGS
from .install import choose_pairings, ensure_library
from .loader import load_library
from .records import (
    CATEGORIES,
    PAIRINGS_PER_SCENARIO,
    FieldError,
    Library,
    RecordError,
    scenario_from_dict,
    validate_scenario,
)

GENERATED_SOURCE = "sotopia-pi generated"
DEFAULT_TEMPERATURE = 0.5  # SOTOPIA-pi's setting
DEFAULT_ATTEMPTS = 4  # answers per seed
DEFAULT_SEEDS_PER_SCENARIO = 3  # seeds tried before a requested scenario is given up
MAX_TOKENS = 1000
SCENARIO_MAX_CHARS = 500
GOAL_MAX_CHARS = 320
CODENAME_MAX_CHARS = 40
SAME_CODENAME_RATIO = 0.85
# Two texts this similar (difflib ratio over their words) say the same thing.
NEAR_DUPLICATE_RATIO = 0.8
# A text whose words are this much taken, in order, from another text copies it.
COPIED_SHARE = 0.7
# Generated text must read as prose: at least this share of its tokens are plain words.
MIN_WORD_SHARE = 0.75
MIN_SCENARIO_WORDS = 12
MIN_GOAL_WORDS = 5

# The answer's field names, in the order the model should write them: the situation first,
# then the goals it implies, and the title last so that it names the new situation. They sort
# alphabetically in this order too, because the llama.cpp grammar writer sorts properties.
ANSWER_FIELDS = {
    "context": "scenario",
    "goals": "agent_goals",
    "relationship": "relationship",
    "title": "codename",
    "type": "category",
}

ProgressCallback = Callable[[str], None]


class GenerationError(SotopiaError, RuntimeError):
    """Generation cannot run (a count below 1, or no scenario in the store to show as an example)."""


class Attempt(BaseModel):
    """One model answer and what became of it."""

    seed: str
    number: int
    accepted: bool
    problem: str = ""  # why it was rejected
    note: str = ""  # what was adjusted in an accepted answer
    text: str = ""


class GeneratedScenario(BaseModel):
    scenario: Scenario
    pairings: list[Pairing]
    seed: str
    model: str
    example_id: str
    attempts: int


class GenerationReport(BaseModel):
    requested: int
    model: str
    generated: list[GeneratedScenario] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)

    @property
    def failed_seeds(self) -> list[str]:
        used = {g.seed for g in self.generated}
        return list(dict.fromkeys(a.seed for a in self.attempts if a.seed not in used))

    @property
    def complete(self) -> bool:
        return len(self.generated) == self.requested


# -- the request -----------------------------------------------------------------------------


def generation_schema() -> dict:
    """The answer's JSON schema: enums for the closed sets, length bounds on every string."""
    goal = {"type": "string", "minLength": 20, "maxLength": GOAL_MAX_CHARS}
    properties = {
        "context": {"type": "string", "minLength": 40, "maxLength": SCENARIO_MAX_CHARS},
        "goals": {"type": "array", "items": goal, "minItems": 2, "maxItems": 2},
        "relationship": {"type": "string", "enum": [level.name for level in RelationshipLevel]},
        "title": {"type": "string", "minLength": 3, "maxLength": CODENAME_MAX_CHARS},
        "type": {"type": "string", "enum": list(CATEGORIES)},
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def example_json(scenario: Scenario) -> str:
    """A scenario shown in the very shape the answer must take."""
    record = {
        "scenario": scenario.scenario,
        "agent_goals": scenario.agent_goals,
        "relationship": RelationshipLevel(scenario.relationship).name,
        "codename": scenario.codename,
        "category": scenario.category,
    }
    answer = {name: record[field] for name, field in ANSWER_FIELDS.items()}
    return json.dumps(answer, ensure_ascii=False, indent=1)


_SYSTEM = (
    "You write short role-play scenarios for practising social skills. A scenario puts two "
    "people in one everyday situation that they have to talk through. You answer with a single "
    "JSON object and nothing else."
)


def build_messages(seed: str, example: Scenario) -> list[ChatMessage]:
    """The request as a one-shot chat: the rules and the example's situation, the example as
    the model's own earlier answer, then the new situation.

    Shown as one JSON blob inside the request, the example gets copied by small models; as an
    earlier answer it is followed for its form (measured on the embedded model: 3 of 16 answers
    usable with the example inside the request, 10 of 16 as an earlier answer).
    """
    levels = ", ".join(level.name for level in RelationshipLevel)
    rules = f"""Write a role-play scenario, as one JSON object, for the situation given at the end.
How to fill in each field:
- context: two to four sentences about the situation both people can see. Name nobody, and do \
not write he, she, his or her: say "one person", "the other" or "they". Both people are adults.
- goals: two private goals, one for each person, each addressed to that person as "you". \
The goals must pull against each other, or depend on each other, so there is something to talk \
through. Private facts go inside <extra_info>...</extra_info>, tactics inside \
<strategy_hint>...</strategy_hint>.
- relationship: how well the two already know each other, one of: {levels}.
- title: two to four lower-case words joined by underscores, naming the situation.
- type: one of {", ".join(CATEGORIES)}.

Situation: "{example.codename.replace("_", " ")}"."""
    return [
        ChatMessage(role="system", content=_SYSTEM),
        ChatMessage(role="user", content=rules),
        ChatMessage(role="assistant", content=example_json(example)),
        ChatMessage(role="user", content=f'A new scenario, not like the last one. Situation: "{seed}"'),
    ]


# -- checking an answer ----------------------------------------------------------------------


def slugify_codename(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "_".join(words)[:CODENAME_MAX_CHARS].strip("_")


def parse_answer(text: str) -> Scenario:
    """A new Scenario from a model answer, or ValueError saying what is wrong with it."""
    return _parse(text)[0]


def _parse(text: str) -> tuple[Scenario, list[str]]:
    """The scenario in an answer and a note for each repair made to it."""
    notes: list[str] = []
    read = read_json(text, repair=False)
    if read.problem:
        raise ValueError(read.problem)
    data = read.value
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(ANSWER_FIELDS))
    if unknown:
        raise ValueError(f"unexpected field(s): {', '.join(unknown)}")
    missing = [name for name in ANSWER_FIELDS if name not in data]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    record = {ANSWER_FIELDS[name]: value for name, value in data.items()}
    if isinstance(record.get("codename"), str):
        record["codename"] = slugify_codename(record["codename"])
    goals = record.get("agent_goals")
    if isinstance(goals, list):
        repaired = [repair_hint_tags(g.strip()) if isinstance(g, str) else g for g in goals]
        if any(isinstance(g, str) and g.strip() != r for g, r in zip(goals, repaired)):
            notes.append("hint tags repaired")
        record["agent_goals"] = repaired
    if isinstance(record.get("scenario"), str):
        record["scenario"] = record["scenario"].strip()
    record.update(id=new_id(), source=GENERATED_SOURCE)
    try:
        scenario = scenario_from_dict(record)
    except ValueError as error:
        raise ValueError(_answer_names(str(error))) from None
    problem = _prose_problem(scenario)
    if problem:
        raise ValueError(problem)
    return scenario, notes


def repair_hint_tags(goal: str) -> str:
    """Balance hint tags the way a writer meant them: a closing tag with no opening is dropped,
    a tag left open is closed at the end, and an empty tag pair is removed."""
    pieces: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in HINT_TAG_MARKUP.finditer(goal):
        pieces.append(goal[position : match.start()])
        position = match.end()
        closing, tag = match.group(1) == "/", match.group(2)
        if not closing:
            open_tags.append(tag)
            pieces.append(f"<{tag}>")
        elif tag in open_tags:
            while open_tags:  # close anything opened inside it, then the tag itself
                inner = open_tags.pop()
                pieces.append(f"</{inner}>")
                if inner == tag:
                    break
    pieces.append(goal[position:])
    pieces += [f"</{tag}>" for tag in reversed(open_tags)]
    repaired = "".join(pieces)
    previous = None
    while previous != repaired:
        previous, repaired = repaired, _EMPTY_HINT.sub("", repaired)
    return repaired.strip()


def _answer_names(message: str) -> str:
    """Speak of the answer's own field names (goals.0, not agent_goals.0)."""
    for name, field in ANSWER_FIELDS.items():
        message = re.sub(rf"\b{field}\b", name, message)
    return message


_TAG_NAMES = "|".join(HINT_TAGS)
_EMPTY_HINT = re.compile(rf"<({_TAG_NAMES})>\s*</\1>")
_PLAIN_WORD = re.compile(r"^[(\"'\u2018\u201c]*[A-Za-z][A-Za-z'\u2019-]*[.,;:!?)\"'\u2019\u201d]*$")


def _prose_problem(scenario: Scenario) -> str | None:
    """Catch what a schema cannot: lists of names, URLs, id-like tokens instead of sentences."""
    texts = [("context", scenario.scenario, MIN_SCENARIO_WORDS)] + [
        (f"goals.{index}", goal, MIN_GOAL_WORDS) for index, goal in enumerate(scenario.agent_goals)
    ]
    for name, text, min_words in texts:
        tokens = HINT_TAG_MARKUP.sub(" ", text).split()
        words = [token for token in tokens if _PLAIN_WORD.match(token)]
        if len(words) < min_words:
            return f"{name}: needs at least {min_words} words (got {len(words)})"
        if len(words) < MIN_WORD_SHARE * len(tokens):
            return f"{name}: does not read as sentences (only {len(words)} of {len(tokens)} tokens are words)"
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", HINT_TAG_MARKUP.sub(" ", text).lower())


def _likeness(first: list[str], second: list[str]) -> tuple[float, float]:
    """(similarity, copied share): difflib's ratio, and the share of the shorter text's words
    found in order in the other (a text pasted into a longer one scores high on the second)."""
    if not first or not second:
        return 0.0, 0.0
    matcher = SequenceMatcher(None, first, second, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return 2 * matched / (len(first) + len(second)), matched / min(len(first), len(second))


def _repeats(first: list[str], second: list[str]) -> bool:
    similarity, copied = _likeness(first, second)
    # a few common words in order ("the other person to") are not a copy
    long_enough = min(len(first), len(second)) >= 8
    return similarity >= NEAR_DUPLICATE_RATIO or (long_enough and copied >= COPIED_SHARE)


def find_duplicate(candidate: Scenario, existing: list[Scenario]) -> str | None:
    """Why `candidate` repeats an existing scenario (same or near-same codename or scenario
    text, or both goals), or None."""
    text = _words(candidate.scenario)
    goals = [_words(goal) for goal in candidate.agent_goals]
    for other in existing:
        label = other.codename or other.id
        if candidate.codename and other.codename:
            if _same_codename(candidate.codename, other.codename):
                return f"codename {candidate.codename!r} is (nearly) that of {label}"
        if _repeats(text, _words(other.scenario)):
            return f"scenario text repeats {label}"
        other_goals = [_words(goal) for goal in other.agent_goals]
        if all(any(_repeats(goal, theirs) for theirs in other_goals) for goal in goals):
            return f"both goals repeat the goals of {label}"
    return None


# -- seeds -----------------------------------------------------------------------------------


def used_seeds(store: Store) -> dict[str, dict]:
    """Every recorded seed use: seed -> {model, scenario_id, created_at}."""
    return {use.seed: use.model_dump(exclude={"seed"}) for use in seed_uses(store)}


def unused_seeds(store: Store, library: Library) -> list[str]:
    used = used_seeds(store)
    return [seed for seed in library.seed_prompts if seed not in used]


def seed_for_scenario(store: Store, scenario_id: str) -> dict | None:
    use = seed_use_for_scenario(store, scenario_id)
    return use.model_dump(exclude={"scenario_id"}) if use else None


# -- the loop --------------------------------------------------------------------------------


class SeedUsed(GenerationError):
    """The seed was recorded as used (by another run) before this scenario could claim it."""


class Proposal(BaseModel):
    """What one seed gave: the answers tried and the first that passed, not yet stored.

    `save_proposal` stores it (perhaps edited) and records the seed; dropping it stores
    nothing and leaves the seed unused.
    """

    seed: str
    model: str
    attempts: list[Attempt] = Field(default_factory=list)
    scenario: Scenario | None = None  # None when no answer passed
    example_id: str = ""
    pairs: list[tuple[str, str]] = Field(default_factory=list)


@dataclass
class _Context:
    store: Store
    backend: ChatBackend
    characters: dict[str, Character]
    relationships: list[Relationship]
    attempts_per_seed: int
    temperature: float
    rng: random.Random
    say: ProgressCallback
    cancel: threading.Event | None


def generate_scenarios(
    store: Store,
    backend: ChatBackend,
    count: int,
    *,
    library: Library | None = None,
    attempts_per_seed: int = DEFAULT_ATTEMPTS,
    seeds_per_scenario: int = DEFAULT_SEEDS_PER_SCENARIO,
    temperature: float = DEFAULT_TEMPERATURE,
    rng: random.Random | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> GenerationReport:
    """Generate and store up to `count` new scenarios with their pairings.

    Each requested scenario draws an unused seed and asks for up to `attempts_per_seed`
    answers; when they all fail it moves on to a fresh seed, at most `seeds_per_scenario`
    times. A seed that produced nothing stays unused. The report lists what was stored and
    every answer with its problem.
    """
    if count < 1:
        raise GenerationError("count must be at least 1")
    rng = rng or random.Random()
    if library is None:
        library = load_library()
    ensure_library(store, library.root)
    seeds = unused_seeds(store, library)
    rng.shuffle(seeds)
    say = on_progress or (lambda message: None)
    report = GenerationReport(requested=count, model=backend.name)
    for target in range(count):
        for _ in range(seeds_per_scenario):
            if not seeds:
                say("no unused seed prompts are left; add lines to seed_prompts.txt")
                return report
            seed = seeds.pop()
            say(f"[{target + 1}/{count}] seed: {seed}")
            proposal = propose_scenario(
                store,
                backend,
                seed,
                attempts_per_seed=attempts_per_seed,
                temperature=temperature,
                rng=rng,
                on_progress=on_progress,
                cancel=cancel,
            )
            report.attempts += proposal.attempts
            if proposal.scenario is None:
                say(f"  no valid answer in {attempts_per_seed} attempts; the seed stays unused")
                continue
            try:
                generated = save_proposal(store, proposal)
            except SeedUsed:
                report.attempts[-1] = report.attempts[-1].model_copy(
                    update={"accepted": False, "problem": "another run used this seed meanwhile"}
                )
                continue
            say(f"  stored {generated.scenario.codename} ({generated.scenario.id}) with {len(generated.pairings)} pairing(s)")
            report.generated.append(generated)
            break
    return report


def propose_scenario(
    store: Store,
    backend: ChatBackend,
    seed: str,
    *,
    attempts_per_seed: int = DEFAULT_ATTEMPTS,
    temperature: float = DEFAULT_TEMPERATURE,
    rng: random.Random | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Proposal:
    """Ask the model for a scenario from one seed, up to `attempts_per_seed` answers, and
    return the first that passes every check, without storing it (a person previews it,
    perhaps edits it, then saves it with `save_proposal` or drops it)."""
    context = _Context(
        store=store,
        backend=backend,
        characters={c.id: c for c in store.characters()},
        relationships=store.relationships(),
        attempts_per_seed=attempts_per_seed,
        temperature=temperature,
        rng=rng or random.Random(),
        say=on_progress or (lambda message: None),
        cancel=cancel,
    )
    return _propose(context, seed)


def _propose(context: _Context, seed: str) -> Proposal:
    proposal = Proposal(seed=seed, model=context.backend.name)
    for number in range(1, context.attempts_per_seed + 1):
        if context.cancel is not None and context.cancel.is_set():
            raise Cancelled("generation cancelled")
        existing = context.store.scenarios()
        if not existing:
            raise GenerationError("the store has no scenario to show as an example")
        example = context.rng.choice(existing)
        # Failures repeat at a fixed temperature (often a copy of the example): vary each retry.
        heat = min(1.0, context.temperature + 0.1 * (number - 1))
        try:
            completion = context.backend.complete(
                build_messages(seed, example),
                schema=generation_schema(),
                max_tokens=MAX_TOKENS,
                temperature=heat,
                cancel=context.cancel,
            )
        except BackendError as error:
            _reject(context, proposal, number, f"the model did not answer: {error}")
            continue
        text = completion.text
        try:
            scenario, note = _accept(text, seed, existing, _character_names(context.characters))
        except ValueError as error:
            _reject(context, proposal, number, str(error), text)
            continue
        pairs = choose_pairings(scenario, context.characters, context.relationships, PAIRINGS_PER_SCENARIO, context.rng)
        if not pairs:
            level = RelationshipLevel(scenario.relationship).name
            _reject(context, proposal, number, f"unplayable: no character pair has a {level} relationship", text)
            continue
        proposal.attempts.append(Attempt(seed=seed, number=number, accepted=True, note=note, text=text))
        proposal.scenario, proposal.example_id, proposal.pairs = scenario, example.id, pairs
        context.say(f"  attempt {number}/{context.attempts_per_seed} accepted: {scenario.codename}")
        return proposal
    return proposal


def save_proposal(store: Store, proposal: Proposal, edited: dict | None = None) -> GeneratedScenario:
    """Store a proposed scenario, or the person's edit of it (a dict in the library's format),
    with pairings, and record its seed as used.

    An edit is checked like any library scenario and against the store for duplicates; its
    pairings are chosen afresh when the edit changed who can play it. Raises RecordError,
    storing nothing, when the edit is wrong, GenerationError when there is nothing to save,
    and SeedUsed when the seed was used meanwhile.
    """
    if proposal.scenario is None:
        raise GenerationError("no answer passed the checks, so there is nothing to save")
    scenario, pairs = proposal.scenario, proposal.pairs
    if edited is not None:
        scenario, pairs = _checked_edit(store, scenario.id, proposal.pairs, edited)
    if not claim_seed(store, proposal.seed, proposal.model, scenario.id):
        raise SeedUsed(f"the seed was used meanwhile: {proposal.seed}")
    pairings = _store(store, scenario, pairs)
    return GeneratedScenario(
        scenario=scenario,
        pairings=pairings,
        seed=proposal.seed,
        model=proposal.model,
        example_id=proposal.example_id,
        attempts=len(proposal.attempts),
    )


def _checked_edit(
    store: Store, scenario_id: str, proposed_pairs: list[tuple[str, str]], edited: dict
) -> tuple[Scenario, list[tuple[str, str]]]:
    record = {**edited, "id": scenario_id, "source": GENERATED_SOURCE}
    errors = validate_scenario(record)
    if errors:
        raise RecordError(errors)
    scenario = scenario_from_dict(record)
    others = [s for s in store.scenarios() if s.id != scenario.id]
    duplicate = find_duplicate(scenario, others)
    if duplicate:
        raise RecordError([FieldError(field=None, message=f"duplicate: {duplicate}")])
    characters = {c.id: c for c in store.characters()}
    relationships = store.relationships()
    allowed = set(valid_pairs(scenario, characters, relationships))
    pairs = [pair for pair in proposed_pairs if pair in allowed]
    if not pairs:
        pairs = choose_pairings(scenario, characters, relationships)
    if not pairs:
        level = RelationshipLevel(scenario.relationship).name
        message = f"no character pair has a {level} relationship that fits the constraints"
        raise RecordError([FieldError(field="relationship", message=message)])
    return scenario, pairs


def _accept(text: str, seed: str, existing: list[Scenario], names: re.Pattern | None) -> tuple[Scenario, str]:
    """The scenario in an answer, checked against the store; ValueError says why not."""
    try:
        scenario, notes = _parse(text)
    except ValueError as error:
        raise ValueError(f"invalid: {error}") from None
    for field_text in [scenario.scenario, *scenario.agent_goals]:
        match = names.search(field_text) if names else None
        if match:
            raise ValueError(f"invalid: names the character {match.group(0)!r}")
    # A small model often copies the example's title over a new situation. The title is only a
    # label, so a taken one is replaced by one made from the seed; copied text is still rejected.
    taken = {other.codename for other in existing if other.codename}
    if any(_same_codename(scenario.codename, other) for other in taken):
        codename = _codename_from_seed(seed, taken)
        notes.append(f"title {scenario.codename!r} was taken; named {codename!r} after the seed")
        scenario = scenario.model_copy(update={"codename": codename})
    duplicate = find_duplicate(scenario, existing)
    if duplicate:
        raise ValueError(f"duplicate: {duplicate}")
    return scenario, "; ".join(notes)


def _same_codename(first: str, second: str) -> bool:
    return SequenceMatcher(None, first, second).ratio() >= SAME_CODENAME_RATIO


_FILLER = {"a", "an", "the", "to", "of", "in", "on", "at", "for", "with", "who", "that", "your", "you", "and", "or"}


def _codename_from_seed(seed: str, taken: set[str]) -> str:
    words = [w for w in re.findall(r"[a-z0-9]+", seed.lower()) if w not in _FILLER][:4] or ["generated"]
    base = "_".join(words)[:CODENAME_MAX_CHARS].strip("_")
    codename, suffix = base, 2
    while any(_same_codename(codename, other) for other in taken):
        codename, suffix = f"{base}_{suffix}", suffix + 1
        if suffix > 99:
            break
    return codename


def _character_names(characters: dict[str, Character]) -> re.Pattern | None:
    names = sorted({p for c in characters.values() for p in (c.first_name, c.last_name) if len(p) > 2})
    return re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None


def _store(store: Store, scenario: Scenario, pairs: list[tuple[str, str]]) -> list[Pairing]:
    store.save_scenario(scenario)
    pairings = [Pairing(scenario_id=scenario.id, agent_ids=list(pair)) for pair in pairs]
    for pairing in pairings:
        store.save_pairing(pairing)
    return pairings


def _reject(context: _Context, proposal: Proposal, number: int, problem: str, text: str = "") -> None:
    proposal.attempts.append(Attempt(seed=proposal.seed, number=number, accepted=False, problem=problem, text=text))
    context.say(f"  attempt {number}/{context.attempts_per_seed} rejected: {problem}")
