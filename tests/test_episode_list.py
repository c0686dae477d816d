"""Episode lists for the inspector: filters, terminal scores, tags, order."""

from __future__ import annotations

from sotopia_pi.episode import AgentEvaluation, DimensionScore, Episode, EpisodeStatus, Evaluation
from sotopia_pi.episode_list import EpisodeFilter, count_episodes, list_episodes
from sotopia_pi.store import Store

from .factories import seed_store


def scored(episode_id: str, overall: tuple[float, float], created_at: str, goal: int = 5) -> Evaluation:
    return Evaluation(
        episode_id=episode_id,
        kind="terminal",
        after_turn=3,
        judge_model="embedded",
        created_at=created_at,
        agents=[
            AgentEvaluation(scores={"goal": DimensionScore(score=goal)}, overall=overall[0]),
            AgentEvaluation(scores={"goal": DimensionScore(score=goal + 1)}, overall=overall[1]),
        ],
    )


def add_episode(store: Store, episode_id: str, created_at: str, models=("embedded", "embedded"), **fields) -> Episode:
    episode = Episode(
        id=episode_id,
        scenario_id="bike-sale",
        agent_ids=["ines", "tomas"],
        agent_models=list(models),
        judge_model="embedded",
        created_at=created_at,
        **fields,
    )
    store.save_episode(episode)
    return episode


def fill(store: Store) -> None:
    seed_store(store)
    add_episode(store, "E1", "2025-01-01T00:00:01", status=EpisodeStatus.finished, tags=["keep"])
    add_episode(store, "E2", "2025-01-01T00:00:02", models=("embedded", "gguf:/m/q.gguf+adapter=/a/round1.gguf"),
                status=EpisodeStatus.paused, last_error="server down")
    add_episode(store, "E3", "2025-01-01T00:00:03", models=("openai:qwen@http://127.0.0.1:9/v1", "embedded"),
                status=EpisodeStatus.finished, tags=["keep", "demo"])
    # E1 was judged twice: the newest terminal evaluation is the official one
    store.add_evaluation(scored("E1", (1.0, 2.0), "2025-01-02T00:00:00"))
    store.add_evaluation(scored("E1", (3.5, 2.5), "2025-01-03T00:00:00", goal=7))
    store.add_evaluation(scored("E3", (0.5, 1.0), "2025-01-02T00:00:00"))


def ids(rows) -> list[str]:
    return [row.id for row in rows]


def test_rows_are_newest_first_with_scenario_scores_and_tags(store: Store):
    fill(store)
    rows = list_episodes(store)
    assert ids(rows) == ["E3", "E2", "E1"]
    e1 = rows[2]
    assert e1.scenario == "bike_sale"
    assert e1.overall == (3.5, 2.5) and e1.goal == (7, 8)
    assert e1.tags == ["keep"]
    assert rows[1].overall == (None, None) and not rows[1].scored
    assert rows[1].last_error == "server down" and e1.last_error == ""
    assert sorted(rows[0].tags) == ["demo", "keep"]


def test_filters_narrow_the_list(store: Store):
    fill(store)

    def find(**fields) -> list[str]:
        filters = EpisodeFilter(**fields)
        found = ids(list_episodes(store, filters))
        assert count_episodes(store, filters) == len(found)
        return found

    assert find(status=EpisodeStatus.finished) == ["E3", "E1"]
    assert find(model="QWEN") == ["E3"]
    assert find(adapter="round1") == ["E2"]
    assert find(adapter="q.gguf") == []  # the base model path is not the adapter
    assert find(tag="demo") == ["E3"]
    assert find(tag="kee") == []  # tags match exactly
    assert find(min_overall=3.0) == ["E1"]
    assert find(min_overall=1.0) == ["E3", "E1"]
    assert find(scenario="BIKE") == ["E3", "E2", "E1"]
    assert find(scenario="nothing-like-it") == []
    assert find(scenario="bike", model="%") == []  # LIKE wildcards are matched literally


def test_limit_caps_the_rows(store: Store):
    fill(store)
    assert ids(list_episodes(store, limit=2)) == ["E3", "E2"]
    assert count_episodes(store) == 3


def test_an_adapter_swapped_in_mid_episode_is_found_from_its_turns(store: Store):
    from sotopia_pi.episode import ActionType, Turn

    fill(store)
    add_episode(store, "E4", "2025-01-01T00:00:04", status=EpisodeStatus.finished)
    store.add_turn(Turn(episode_id="E4", index=0, agent=0, action_type=ActionType.speak, argument="hi",
                        model="embedded-base", adapter="round2@v3"))
    assert ids(list_episodes(store, EpisodeFilter(adapter="ROUND2@v3"))) == ["E4"]
    assert ids(list_episodes(store, EpisodeFilter(adapter="round"))) == ["E4", "E2"]


def test_an_exact_scenario_id_filter(store: Store):
    fill(store)
    assert ids(list_episodes(store, EpisodeFilter(scenario_id="bike-sale"))) == ["E3", "E2", "E1"]
    assert list_episodes(store, EpisodeFilter(scenario_id="bike")) == []


def test_the_cli_lists_what_the_inspector_lists(store: Store):
    import json

    from .helpers import cli

    fill(store)
    result = cli("episodes", "list", "--model", "qwen", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["episodes"] == [
        row.model_dump(mode="json") for row in list_episodes(store, EpisodeFilter(model="qwen"))
    ]
    text = cli("episodes", "list", "--adapter", "round1", "--scenario", "bike_sale").stdout
    assert [line.split()[0] for line in text.splitlines()] == ["E2"]
