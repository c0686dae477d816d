"""The hand-written expert corpus: episodes and judgments written by the project's authors.

Files live in `scenarios/expert/`, one JSON file per library scenario, named after its codename:

    {
      "scenario": "adopt_rescue_dog",          # a library codename
      "split": "train",                         # train | heldout (fixed per scenario)
      "episodes": [
        {
          "id": "adopt_rescue_dog-1",           # unique in the corpus
          "quality": "expert",                  # expert | poor
          "flaw": "",                           # poor episodes: what is wrong (see FLAWS)
          "agents": ["mara-okafor", "tobi-okafor"],   # a pair that may play the scenario, slot order
          "turns": [                            # turn i is played by agents[i % 2]
            {"action_type": "speak", "argument": "..."},
            {"action_type": "non-verbal communication", "argument": "..."},
            {"action_type": "leave", "argument": ""}
          ],
          "evaluation": [                       # one judgment per agent, slot order
            {"believability": {"score": 8, "reasoning": "..."}, ...all seven dimensions...},
            {...}
          ]
        }
      ]
    }

Rules the checker enforces (`python -m sotopia_pi.library.expert_corpus check`):
- the scenario exists and the pair may play it; ids are unique;
- expert episodes have 6..20 turns; poor ones 1..20; a `leave` can only be the last turn;
- arguments are at most 300 characters; `none` and `leave` have empty arguments;
- every turn except `none` and `leave` has a non-empty argument;
- both judgments have all seven SOTOPIA dimensions, integer scores in range, non-empty reasoning.

`python -m sotopia_pi.library.expert_corpus brief CODENAME` prints what each side may see for every pair
that may play the scenario (write each side only from its own view) and the rubric.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import paths
from ..episode import ARGUMENT_MAX_CHARS, ActionType
from ..errors import SotopiaError

EXPERT_DIR = "expert"
EXPERT_MODEL = "expert (hand-written)"
EXPERT_TAG = "expert"
MIN_EXPERT_TURNS = 6
MAX_TURNS = 20
FLAWS = (
    "leaves-at-once",
    "off-topic",
    "copies-prompt",
    "reveals-secret",
    "hostile",
    "gives-everything-away",
    "repetitive",
    "out-of-character",
)


class CorpusError(SotopiaError, ValueError):
    """The expert corpus has problems; the message lists them with file and episode."""


class ExpertScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int
    reasoning: str = Field(min_length=1)


class ExpertTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action_type: ActionType
    argument: str = Field(default="", max_length=ARGUMENT_MAX_CHARS)

    @model_validator(mode="after")
    def _argument_fits_type(self) -> ExpertTurn:
        empty = not self.argument.strip()
        if self.action_type in (ActionType.none, ActionType.leave) and not empty:
            raise ValueError(f"a {self.action_type.value} action takes an empty argument")
        if self.action_type not in (ActionType.none, ActionType.leave) and empty:
            raise ValueError(f"a {self.action_type.value} action needs an argument")
        return self


class ExpertEpisode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    quality: Literal["expert", "poor"]
    flaw: str = ""
    agents: list[str] = Field(min_length=2, max_length=2)
    turns: list[ExpertTurn] = Field(min_length=1, max_length=MAX_TURNS)
    evaluation: list[dict[str, ExpertScore]] = Field(min_length=2, max_length=2)

    @model_validator(mode="after")
    def _shape(self) -> ExpertEpisode:
        if self.quality == "expert" and len(self.turns) < MIN_EXPERT_TURNS:
            raise ValueError(f"an expert episode needs at least {MIN_EXPERT_TURNS} turns, not {len(self.turns)}")
        if self.quality == "poor" and self.flaw not in FLAWS:
            raise ValueError(f"a poor episode names its flaw, one of {', '.join(FLAWS)}")
        if self.quality == "expert" and self.flaw:
            raise ValueError("an expert episode has no flaw")
        for index, turn in enumerate(self.turns[:-1]):
            if turn.action_type == ActionType.leave:
                raise ValueError(f"turn {index} leaves, so it must be the last turn")
        return self


class ExpertFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str
    split: Literal["train", "heldout"]
    episodes: list[ExpertEpisode] = Field(min_length=1)


class CorpusEpisode(BaseModel):
    """One checked episode with the file it came from."""

    file: str
    scenario: str
    split: Literal["train", "heldout"]
    episode: ExpertEpisode


def corpus_dir() -> Path:
    return paths.library_dir() / EXPERT_DIR


def _dimension_ranges() -> dict[str, tuple[int, int]]:
    from ..judge import load_dimension_set

    dimensions = load_dimension_set("sotopia")
    return {d.name: (d.low, d.high) for d in dimensions.dimensions}


def _evaluation_problems(episode: ExpertEpisode, ranges: dict[str, tuple[int, int]]) -> list[str]:
    problems = []
    for side, judgment in enumerate(episode.evaluation):
        missing = sorted(set(ranges) - set(judgment))
        extra = sorted(set(judgment) - set(ranges))
        if missing:
            problems.append(f"evaluation[{side}] lacks {', '.join(missing)}")
        if extra:
            problems.append(f"evaluation[{side}] has unknown dimension(s) {', '.join(extra)}")
        for name, value in judgment.items():
            if name in ranges:
                low, high = ranges[name]
                if not low <= value.score <= high:
                    problems.append(f"evaluation[{side}].{name} = {value.score} is outside {low}..{high}")
    return problems


def load_corpus(directory: Path | str | None = None) -> list[CorpusEpisode]:
    """Read and check every corpus file against the library. Raises CorpusError listing every
    problem (file, episode, field); returns the episodes in file order when there are none."""
    from .loader import load_library

    root = Path(directory) if directory else corpus_dir()
    library = load_library()
    scenarios = {scenario.codename: scenario for scenario in library.scenarios}
    ranges = _dimension_ranges()
    problems: list[str] = []
    episodes: list[CorpusEpisode] = []
    seen: set[str] = set()
    files = sorted(root.glob("*.json"))
    if not files:
        raise CorpusError(f"no expert corpus files in {root}")
    for path in files:
        try:
            document = ExpertFile.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError) as error:
            problems.append(f"{path.name}: {error}")
            continue
        scenario = scenarios.get(document.scenario)
        if scenario is None:
            problems.append(f"{path.name}: unknown scenario {document.scenario!r}")
            continue
        if path.stem != document.scenario:
            problems.append(f"{path.name}: file name must be the scenario codename {document.scenario!r}")
        allowed = set(library.valid_pairs(scenario))
        for episode in document.episodes:
            where = f"{path.name}: {episode.id}"
            if episode.id in seen:
                problems.append(f"{where}: duplicate episode id")
            seen.add(episode.id)
            if tuple(episode.agents) not in allowed:
                problems.append(
                    f"{where}: agents {episode.agents} may not play {document.scenario} in this order "
                    f"(pairs: {sorted(allowed)})"
                )
            problems += [f"{where}: {problem}" for problem in _evaluation_problems(episode, ranges)]
            episodes.append(
                CorpusEpisode(file=path.name, scenario=document.scenario, split=document.split, episode=episode)
            )
    if problems:
        raise CorpusError(f"{len(problems)} problem(s) in the expert corpus:\n" + "\n".join(problems))
    return episodes


def corpus_summary(episodes: list[CorpusEpisode]) -> dict:
    quality = Counter(item.episode.quality for item in episodes)
    splits = Counter(item.split for item in episodes)
    flaws = Counter(item.episode.flaw for item in episodes if item.episode.flaw)
    turns = [len(item.episode.turns) for item in episodes if item.episode.quality == "expert"]
    return {
        "episodes": len(episodes),
        "expert": quality.get("expert", 0),
        "poor": quality.get("poor", 0),
        "scenarios": len({item.scenario for item in episodes}),
        "train_episodes": splits.get("train", 0),
        "heldout_episodes": splits.get("heldout", 0),
        "heldout_scenarios": sorted({item.scenario for item in episodes if item.split == "heldout"}),
        "flaws": dict(sorted(flaws.items())),
        "expert_turns_mean": round(sum(turns) / len(turns), 1) if turns else 0,
    }


def brief(codename: str) -> str:
    """What a writer needs for one scenario: each side's own view for every pair, and the rubric."""
    from ..judge import load_dimension_set
    from ..visibility import HINT_TAGS, agent_view
    from .loader import load_library

    library = load_library()
    scenario = library.scenario(codename)
    characters = library.character_map
    lines = [f"# {codename} ({scenario.category}, relationship level {int(scenario.relationship)})", ""]
    for pair in library.valid_pairs(scenario):
        cast = (characters[pair[0]], characters[pair[1]])
        lines.append(f"## agents: {json.dumps(list(pair))}")
        for side in (0, 1):
            lines.append(f"### what {cast[side].name} (side {side}) sees")
            lines.append(agent_view(scenario, cast, side, HINT_TAGS).render())
            lines.append(f"(secret of {cast[side].name}, known only to them: {cast[side].secret})")
            lines.append("")
    lines.append("## rubric")
    for dimension in load_dimension_set("sotopia").dimensions:
        lines.append(f"- {dimension.name} ({dimension.low}..{dimension.high}): {dimension.description}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "brief":
        print(brief(argv[1]))
        return 0
    if argv and argv[0] == "check":
        try:
            episodes = load_corpus(argv[1] if len(argv) > 1 else None)
        except CorpusError as error:
            print(error, file=sys.stderr)
            return 1
        print(json.dumps(corpus_summary(episodes), indent=2))
        return 0
    print("usage: python -m sotopia_pi.library.expert_corpus check [DIR] | brief CODENAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
