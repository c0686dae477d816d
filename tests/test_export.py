"""Snapshots and exports: immutability, per-turn examples, the four file formats, truncation."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from sotopia_pi.dataset import annotations, candidates, filters
from sotopia_pi.dataset.errors import PromptLayoutError, SnapshotError
from sotopia_pi.dataset.examples import count_message_tokens, estimate_tokens, token_counter, truncate_prompt
from sotopia_pi.dataset.export import EpisodeLogRow, ExportFormat, snapshot_examples, write_export
from sotopia_pi.dataset.filters import BestSide
from sotopia_pi.dataset.snapshots import create_snapshot, list_snapshots, load_snapshot
from sotopia_pi.episode import ActionType, AgentAction, ChatMessage
from sotopia_pi.prompts import CLOSING_PREFIX, HISTORY_HEADER
from sotopia_pi.store import Store
from sotopia_pi.visibility import UNKNOWN, render_goal

from .curation_helpers import DEFAULT_ACTIONS, add_episode, examples_per_side, seed_profiles
from .factories import bike_scenario

TRAINING_FORMATS = [ExportFormat.sft, ExportFormat.chat, ExportFormat.prompt_completion]


@pytest.fixture
def episodes(store: Store) -> dict:
    seed_profiles(store)
    return {
        "strong": add_episode(store, (9, 3), minutes=0),
        "human": add_episode(store, (4, 8), human_side=1, minutes=1),
        "swap": add_episode(store, (6, 6), scenario_id="bike-swap", minutes=2),
        "failed": add_episode(store, (10, 10), failed_side=1, minutes=3),
    }


def load_jsonl(path: Path, tmp_path: Path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def tiny_tokenizer():
    """A word-level Hugging Face tokenizer with a ChatML template, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="<|im_end|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


# -- snapshots ----------------------------------------------------------------------------


def test_snapshot_manifest_records_how_the_selection_was_made(store: Store, episodes: dict):
    annotations.set_decision(store, episodes["failed"].id, "reject")
    snapshot = create_snapshot(store, "round-1", [BestSide()], description="first round")
    manifest = snapshot.manifest
    sides = {(s.episode_id, s.side) for s in manifest.sides}
    assert sides == {
        (episodes["strong"].id, 0),
        (episodes["human"].id, 1),
        (episodes["swap"].id, 0),
        (episodes["swap"].id, 1),
    }
    side0, side1 = examples_per_side()
    assert manifest.examples == 2 * side0 + 2 * side1
    assert manifest.counts.episodes == 3
    assert manifest.filters == [BestSide()]
    assert manifest.steps[0].explanation == BestSide().explain()
    assert [(d.episode_id, d.decision) for d in manifest.decisions] == [(episodes["failed"].id, "reject")]
    assert manifest.description == "first round"
    assert len(manifest.digest) == 64
    assert [m.name for m in list_snapshots(store)] == ["round-1"]


def test_snapshot_names_are_never_reused_and_must_be_plain(store: Store, episodes: dict):
    create_snapshot(store, "round-1", [BestSide()])
    with pytest.raises(SnapshotError, match="already exists"):
        create_snapshot(store, "round-1", [])
    with pytest.raises(SnapshotError, match="snapshot name"):
        create_snapshot(store, "../escape", [])
    with pytest.raises(SnapshotError, match="empty"):
        create_snapshot(store, "nothing", [filters.TagIs(tags=["absent"])])
    with pytest.raises(SnapshotError, match="no snapshot named 'missing'"):
        load_snapshot(store, "missing")


def export_all(store: Store, name: str, folder: Path) -> dict[str, bytes]:
    snapshot = load_snapshot(store, name)
    contents = {}
    for fmt in ExportFormat:
        path = folder / f"{fmt.value}.jsonl"
        write_export(snapshot, fmt, path)
        contents[fmt.value] = path.read_bytes()
    return contents


def test_a_snapshot_never_changes_after_it_is_made(store: Store, episodes: dict, tmp_path: Path):
    create_snapshot(store, "round-1", [BestSide()])
    before = export_all(store, "round-1", tmp_path / "before")
    manifest_before = load_snapshot(store, "round-1").manifest

    strong = episodes["strong"].id
    annotations.edit_turn(store, strong, 0, "Completely different words.")
    annotations.set_decision(store, episodes["swap"].id, "reject")
    annotations.add_tags(store, strong, ["late-tag"])
    store.delete_episode(episodes["human"].id)
    add_episode(store, (10, 10), minutes=9)

    assert export_all(store, "round-1", tmp_path / "after") == before
    assert load_snapshot(store, "round-1").manifest == manifest_before
    assert b"Completely different words." not in before["chat"]


def test_the_database_refuses_to_alter_a_snapshot_and_loading_detects_tampering(store: Store, episodes: dict):
    create_snapshot(store, "round-1", [BestSide()])
    conn = sqlite3.connect(store.path)
    try:
        for sql in (
            "UPDATE dataset_snapshots SET manifest='{}'",
            "DELETE FROM dataset_snapshot_episodes",
            "INSERT INTO dataset_snapshot_episodes VALUES ('round-1', 'extra', '{}')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="immutable|sealed"):
                conn.execute(sql)
        conn.execute("DROP TRIGGER dataset_snapshot_episodes_immutable")
        episode_id, data = conn.execute("SELECT episode_id, data FROM dataset_snapshot_episodes").fetchone()
        altered = zlib.decompress(data).decode().replace("Good morning", "Bad morning")
        conn.execute(
            "UPDATE dataset_snapshot_episodes SET data=? WHERE episode_id=?", (zlib.compress(altered.encode()), episode_id)
        )
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(SnapshotError, match="digest"):
        load_snapshot(store, "round-1")


# -- per-turn examples --------------------------------------------------------------------


def test_each_example_prompt_is_exactly_what_the_agent_was_given(store: Store, episodes: dict):
    snapshot = create_snapshot(store, "round-1", [BestSide()])
    examples = snapshot_examples(snapshot)
    assert len(examples) == snapshot.manifest.examples
    for example in examples:
        turn = store.turns(example.episode_id)[example.turn]
        assert turn.agent == example.side
        assert example.prompt == turn.prompt
        assert example.prompt[0].role == "system" and example.prompt[1].role == "user"
        assert AgentAction.model_validate_json(example.completion) == turn.action
        assert turn.action_type != ActionType.none
    human = [e for e in examples if e.episode_id == episodes["human"].id]
    assert human and all(e.by_human for e in human)
    assert [e.turn for e in examples if e.episode_id == episodes["strong"].id] == [0, 2, 4, 6]


def test_an_edit_changes_that_turns_output_but_not_what_the_partner_saw(store: Store, episodes: dict):
    strong = episodes["strong"].id
    annotations.edit_turn(store, strong, 0, "Morning. I only have a minute.")
    snapshot = create_snapshot(store, "edited", [BestSide()])
    by_turn = {e.turn: e for e in snapshot_examples(snapshot) if e.episode_id == strong}
    assert json.loads(by_turn[0].completion) == {"action_type": "speak", "argument": "Morning. I only have a minute."}
    assert by_turn[0].edited and not by_turn[2].edited
    later_history = "\n".join(message.content for message in by_turn[2].prompt)
    assert DEFAULT_ACTIONS[0][1] in later_history
    assert "I only have a minute" not in later_history
    assert [(t.episode_id, t.index) for t in snapshot.manifest.edited_turns] == [(strong, 0)]


@pytest.mark.parametrize("fmt", TRAINING_FORMATS)
def test_training_files_load_with_datasets_and_hold_every_example(
    store: Store, episodes: dict, tmp_path: Path, fmt: ExportFormat
):
    snapshot = create_snapshot(store, "round-1", [BestSide()])
    path = tmp_path / f"train-{fmt.value}.jsonl"
    report = write_export(snapshot, fmt, path)
    dataset = load_jsonl(path, tmp_path)
    assert len(dataset) == report.rows == snapshot.manifest.examples
    examples = snapshot_examples(snapshot)
    for row, example in zip(dataset, examples):
        prompt = [message.model_dump() for message in example.prompt]
        if fmt is ExportFormat.chat:
            assert row["messages"][:-1] == prompt
            answer = row["messages"][-1]
        elif fmt is ExportFormat.prompt_completion:
            assert row["prompt"] == prompt
            [answer] = row["completion"]
        else:
            assert row["prompt"] == prompt
            assert (row["episode_id"], row["side"], row["turn"]) == (example.episode_id, example.side, example.turn)
            answer = {"role": "assistant", "content": row["completion"]}
        assert answer["role"] == "assistant"
        assert AgentAction.model_validate_json(answer["content"]).action_type != ActionType.none


def test_trl_reads_the_conversational_rows_and_renders_them_with_a_chat_template(
    store: Store, episodes: dict, tmp_path: Path
):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    snapshot = create_snapshot(store, "round-1", [BestSide()])
    tokenizer = tiny_tokenizer()
    for fmt in (ExportFormat.chat, ExportFormat.prompt_completion):
        path = tmp_path / f"{fmt.value}.jsonl"
        write_export(snapshot, fmt, path)
        row = load_jsonl(path, tmp_path)[0]
        assert is_conversational(row)
        rendered = maybe_apply_chat_template(row, tokenizer)
        text = rendered.get("text") or rendered["prompt"] + rendered["completion"]
        assert text.startswith("<|im_start|>system\nYou are Ines Varga.")
        assert '<|im_start|>assistant\n{"action_type":"speak"' in text


def test_episodelog_rows_follow_sotopias_layout(store: Store, episodes: dict, tmp_path: Path):
    annotations.set_decision(store, episodes["failed"].id, "keep", side=0)
    snapshot = create_snapshot(store, "logs", [BestSide()])
    path = tmp_path / "episodes.jsonl"
    report = write_export(snapshot, ExportFormat.episodelog, path)
    rows = [EpisodeLogRow.model_validate_json(line) for line in path.read_text().splitlines()]
    assert report.rows == len(rows) == snapshot.manifest.counts.episodes == 4
    by_id = {row.pk: row for row in rows}

    strong = by_id[episodes["strong"].id]
    assert strong.environment == "bike-sale"
    assert strong.agents == ["ines", "tomas"]
    assert strong.models == ["embedded", "embedded", "embedded"]
    assert len(strong.messages) == len(DEFAULT_ACTIONS) + 1
    first = strong.messages[0]
    assert [(sender, receiver) for sender, receiver, _ in first] == [
        ("Environment", "Ines Varga"),
        ("Environment", "Tomas Reyes"),
        ("Ines Varga", "Environment"),
        ("Tomas Reyes", "Environment"),
    ]
    ines_start = first[0][2]
    goals = bike_scenario().agent_goals
    assert ines_start.startswith("\nScenario: ") and ines_start.endswith("\nConversation Starts:\n")
    assert f"Ines Varga's goal: {render_goal(goals[0])}" in ines_start
    assert f"Tomas Reyes's goal: {UNKNOWN}" in ines_start
    assert first[2][2] == f'said: "{DEFAULT_ACTIONS[0][1]}"' and first[3][2] == "did nothing"
    assert strong.messages[1][0][2] == f'Turn #0: Ines Varga said: "{DEFAULT_ACTIONS[0][1]}"\n'
    assert strong.messages[1][2][2] == "did nothing"
    assert strong.messages[-1] == [
        ("Environment", "Ines Varga", "Turn #6: Ines Varga left the conversation\n"),
        ("Environment", "Tomas Reyes", "Turn #6: Ines Varga left the conversation\n"),
    ]
    overall, dims = strong.rewards[0]
    assert dims["goal"] == 9 and dims["overall_score"] == overall
    assert set(dims) == set(candidates.SOTOPIA_DIMENSIONS) | {"overall_score"}
    assert "Agent 1 (Ines Varga) comments:" in strong.reasoning

    failed = by_id[episodes["failed"].id]
    assert failed.rewards[1] == 0.0
    assert isinstance(failed.rewards[0], tuple)
    assert "not scored" in failed.reasoning


# -- truncation ---------------------------------------------------------------------------


def long_prompt() -> list[ChatMessage]:
    history = [f"Turn #{i}: Ines Varga said: \"line number {i} of the talk\"" for i in range(12)]
    history[3] += "\nand a second line of the same turn"
    closing = f"{CLOSING_PREFIX}12. It is Ines Varga's move.\nAnswer with one JSON object."
    return [
        ChatMessage(role="system", content="You are Ines Varga.\nScenario: a bike sale, told at length."),
        ChatMessage(role="user", content=f"{HISTORY_HEADER}\n" + "\n".join(history) + f"\n\n{closing}"),
    ]


def test_truncation_drops_the_oldest_history_lines_only():
    messages = long_prompt()
    full = count_message_tokens(messages, estimate_tokens)
    cut, dropped = truncate_prompt(messages, full - 20)
    assert dropped >= 1
    assert count_message_tokens(cut, estimate_tokens) <= full - 20
    assert cut[0] == messages[0]
    original_lines = messages[1].content.split("\n")
    kept_lines = cut[1].content.split("\n")
    assert kept_lines[0] == HISTORY_HEADER
    closing_at = original_lines.index(next(line for line in original_lines if line.startswith(CLOSING_PREFIX)))
    assert kept_lines[-3:] == original_lines[closing_at - 1 :]
    history_kept = [line for line in kept_lines if line.startswith("Turn #")]
    assert history_kept == [f'Turn #{i}: Ines Varga said: "line number {i} of the talk"' for i in range(dropped, 12)]


def without_oldest(messages: list[ChatMessage], entries: int) -> list[ChatMessage]:
    """The prompt of long_prompt() with its `entries` oldest turns removed, built by hand."""
    history = [f"Turn #{i}: Ines Varga said: \"line number {i} of the talk\"" for i in range(12)]
    history[3] += "\nand a second line of the same turn"
    tail = messages[1].content.split("\n\n", 1)[1]
    body = "\n".join(history[entries:])
    return [messages[0], ChatMessage(role="user", content=f"{HISTORY_HEADER}\n{body}\n\n{tail}")]


def test_truncation_removes_a_multi_line_turn_whole_and_stops_as_soon_as_it_fits():
    messages = long_prompt()
    full = count_message_tokens(messages, estimate_tokens)
    assert truncate_prompt(messages, full) == (messages, 0)
    for entries in (1, 3, 4):
        expected = without_oldest(messages, entries)
        budget = count_message_tokens(expected, estimate_tokens)
        assert truncate_prompt(messages, budget) == (expected, entries)
    assert "second line" in without_oldest(messages, 3)[1].content
    assert "second line" not in without_oldest(messages, 4)[1].content
    everything_gone, dropped = truncate_prompt(messages, 1)
    assert dropped == 12 and everything_gone[0] == messages[0]
    tail = messages[1].content.split("\n\n", 1)[1]
    assert everything_gone[1].content == f"{HISTORY_HEADER}\n\n{tail}"


def test_truncation_counts_with_a_hugging_face_tokenizer():
    tokenizer = tiny_tokenizer()
    count = token_counter(tokenizer)
    assert count("a b c") == 3
    messages = long_prompt()
    full = count_message_tokens(messages, count)
    cut, dropped = truncate_prompt(messages, full - 8, count)
    # every history line is 8 or more words; one line is enough
    assert dropped == 1
    assert count_message_tokens(cut, count) <= full - 8


def test_truncation_needs_the_closing_block_only_when_it_must_cut():
    odd = [ChatMessage(role="user", content="Turn #0: hello\nTurn #1: hi")]
    assert truncate_prompt(odd, 1000) == (odd, 0)
    with pytest.raises(PromptLayoutError, match="closing block"):
        truncate_prompt(odd, 2)


def test_export_with_a_token_limit_keeps_the_example_count(store: Store, episodes: dict, tmp_path: Path):
    snapshot = create_snapshot(store, "round-1", [BestSide()])
    longest = max(count_message_tokens(e.prompt, estimate_tokens) for e in snapshot_examples(snapshot))
    report = write_export(snapshot, "chat", tmp_path / "cut.jsonl", max_prompt_tokens=longest - 5)
    assert report.rows == snapshot.manifest.examples
    assert report.truncated_examples >= 1 and report.dropped_history_lines >= report.truncated_examples
    rows = [json.loads(line) for line in (tmp_path / "cut.jsonl").read_text().splitlines()]
    originals = snapshot_examples(snapshot)
    for row, original in zip(rows, originals):
        assert row["messages"][0] == original.prompt[0].model_dump()
        assert row["messages"][-1]["content"] == original.completion
