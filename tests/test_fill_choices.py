"""LlamaCppBackend.fill_choices on the real embedded GGUF: a template whose blanks are filled with
the likeliest allowed strings, the live judge's cheap alternative to generating under a grammar."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sotopia_pi.backends import BackendError, Cancelled, create_backend
from sotopia_pi.backends.base import ChoiceFilling
from sotopia_pi.backends.llama_cpp_backend import LlamaCppBackend
from sotopia_pi.episode import ChatMessage
from sotopia_pi.judge import live_template, load_dimension_set, parse_live_scores

ADAPTER = Path(__file__).resolve().parents[1] / "models" / "adapters" / "embedded-bc.gguf"
QUESTIONS = [
    "On a scale from 0 to 10, how much does a person who shouts at a waiter respect social rules?",
    "Rate from -5 to 5 how much a friendship improved after a kind gift. Answer with one number.",
    "Give an integer from -10 to 0: how much did revealing a friend's secret cost?",
    "Tomas sold the bike for 1,250 after asking 1,400. Score his goal from 0 to 10.",
]
RANGES = [range(0, 11), range(-5, 6), range(-10, 1), range(0, 11)]


def ask(question: str, extra: str = "") -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are a strict judge. You answer with numbers only."),
        ChatMessage(role="user", content=question + extra),
    ]


@pytest.fixture(scope="module")
def backend():
    # repeat_penalty 1.0: generation then picks by the raw logits, as fill_choices does
    with create_backend("embedded-base", n_ctx=1024, seed=3, repeat_penalty=1.0) as opened:
        yield opened


def grammar_answer(backend: LlamaCppBackend, question: str, allowed: range) -> str:
    backend.reset_cache()
    schema = {"type": "integer", "enum": list(allowed)}
    return backend.complete(ask(question), schema=schema, max_tokens=8, temperature=0.0).text


def filled_answer(backend: LlamaCppBackend, question: str, allowed: range) -> str:
    backend.reset_cache()
    return backend.fill_choices(ask(question), [[str(value) for value in allowed]]).text


def test_a_filled_blank_is_what_greedy_generation_under_the_same_grammar_answers(backend: LlamaCppBackend):
    assert isinstance(backend, ChoiceFilling)
    answers = []
    for question, allowed in zip(QUESTIONS, RANGES):
        filled = filled_answer(backend, question, allowed)
        assert filled == grammar_answer(backend, question, allowed), question
        answers.append(filled)
    assert len(set(answers)) > 1, answers  # the questions tell the answers apart


def test_the_live_template_fills_into_scores_that_parse(backend: LlamaCppBackend):
    dimensions = load_dimension_set("sotopia")
    backend.reset_cache()
    completion = backend.fill_choices(ask("Score Ana and Ben so far."), live_template(dimensions))
    sides = parse_live_scores(completion.text, dimensions)
    assert all(side.ok for side in sides), completion.text
    assert completion.text.startswith('{"scores":[[') and completion.text.endswith("]]}")
    assert completion.completion_tokens >= 2 * len(dimensions.dimensions) + 4
    assert completion.finish_reason == "stop"


def test_a_longer_prompt_reads_only_its_new_tokens_and_answers_as_from_an_empty_cache(backend: LlamaCppBackend):
    blank = [[str(value) for value in range(11)]]
    backend.reset_cache()
    first = backend.fill_choices(ask(QUESTIONS[0]), blank)
    assert first.cached_tokens == 0
    longer = ask(QUESTIONS[0], " The waiter had spilled soup on him, and he apologised afterwards.")
    warm = backend.fill_choices(longer, blank)
    assert warm.prompt_tokens > first.prompt_tokens
    # everything up to where the user's message changed came from the cache
    assert first.prompt_tokens - 10 < warm.cached_tokens < first.prompt_tokens
    backend.reset_cache()
    cold = backend.fill_choices(longer, blank)
    assert cold.cached_tokens == 0 and cold.text == warm.text


def test_generation_after_a_fill_reuses_the_cache_and_answers_as_from_an_empty_cache(backend: LlamaCppBackend):
    backend.reset_cache()
    filled = backend.fill_choices(ask(QUESTIONS[1]), [[str(value) for value in RANGES[1]]])
    longer = ask(QUESTIONS[1], " Explain in one sentence.")
    warm = backend.complete(longer, max_tokens=12, temperature=0.0)
    assert warm.cached_tokens > filled.prompt_tokens - 10
    backend.reset_cache()
    cold = backend.complete(longer, max_tokens=12, temperature=0.0)
    assert cold.cached_tokens == 0 and cold.text == warm.text


def test_a_prompt_read_ahead_leaves_only_its_last_words_to_read(backend: LlamaCppBackend):
    blank = [[str(value) for value in range(11)]]
    story = " Tomas said he would pay 1,250 in cash today if the seller kept the rain cover on it."
    backend.reset_cache()
    read = backend.read_ahead(ask(QUESTIONS[3], story[:60]))
    assert read.cached_tokens == 0 and read.prompt_tokens > 40 and read.text == ""
    again = backend.read_ahead(ask(QUESTIONS[3], story[:60]))
    assert again.cached_tokens == again.prompt_tokens == read.prompt_tokens  # nothing new to read
    warm = backend.fill_choices(ask(QUESTIONS[3], story), blank)
    assert warm.prompt_tokens - warm.cached_tokens < 24  # the story's rest and the message's end
    backend.reset_cache()
    assert backend.fill_choices(ask(QUESTIONS[3], story), blank).text == warm.text


class DecodeCounter:
    """Counts llama.cpp decodes, and the tokens they read, on one backend's context."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.context = backend.llm._ctx
        self.count = 0
        self.tokens = 0

    def __enter__(self) -> DecodeCounter:
        decode = type(self.context).decode

        def counted(batch):
            self.count += 1
            self.tokens += batch.n_tokens()
            return decode(self.context, batch)

        self.context.decode = counted
        return self

    def __exit__(self, *exc_info) -> None:
        del self.context.decode


def test_a_guess_changes_the_cost_of_an_answer_never_the_answer(backend: LlamaCppBackend):
    dimensions = load_dimension_set("sotopia")
    template = live_template(dimensions)
    messages = ask("Score Ana, who lied about the price, and Ben, who stayed polite, so far.")

    def answer(guess, tokens_read: list[int] | None = None):
        backend.reset_cache()
        backend.fill_choices(messages[:1], [["0"]])  # the system prompt cached, as in an episode
        with DecodeCounter(backend) as decodes:
            text = backend.fill_choices(messages, template, guess=guess).text
        if tokens_read is not None:
            tokens_read.append(decodes.tokens)
        return text, decodes.count

    plain_read: list[int] = []
    plain, plain_decodes = answer(None, plain_read)
    right = [str(value) for side in json.loads(plain)["scores"] for value in side]
    assert answer(right) == (plain, 1)  # the prompt's rest and the whole answer, checked at once
    shifted = right[:5] + [allowed[0] for allowed in live_template_blanks(dimensions)[5:]]
    if shifted != right:
        text, decodes = answer(shifted)
        assert text == plain and 1 < decodes < plain_decodes
    for wrong in (["0"] * 14, ["11", "x"], right[:3], ["10", "-5", "10", "-10", "-10", "-5", "10"] * 2):
        assert answer(wrong)[0] == plain, wrong
    assert plain_decodes >= 2 * len(dimensions.dimensions)  # without a guess: a decode per blank at least
    wrong_everywhere = [next(a for a in allowed if a != r) for allowed, r in zip(live_template_blanks(dimensions), right)]
    wrong_read: list[int] = []
    assert answer(wrong_everywhere, wrong_read)[0] == plain
    # a guess that misses every blank wastes its first reading and one more blank's, no more
    guesses = iter(wrong_everywhere)
    pieces = [part if isinstance(part, str) else next(guesses) for part in template]
    guessed_tokens = sum(len(backend.llm.tokenize(piece.encode(), add_bos=False, special=False)) for piece in pieces)
    assert wrong_read[0] <= plain_read[0] + guessed_tokens + 4, (wrong_read, plain_read, guessed_tokens)


def test_a_guess_on_a_cold_cache_longer_than_a_batch_gives_the_same_answer(backend: LlamaCppBackend):
    long_question = ask("The bike was fine and the talk was calm. " * 60 + QUESTIONS[0])
    blank = [[str(value) for value in range(11)], ",", [str(value) for value in range(-5, 6)]]
    backend.reset_cache()
    plain = backend.fill_choices(long_question, blank)
    assert plain.prompt_tokens > backend.llm.n_batch and plain.cached_tokens == 0
    for guess in (plain.text.split(","), ["3", "-5"], ["9"]):
        backend.reset_cache()
        assert backend.fill_choices(long_question, blank, guess=guess).text == plain.text, guess


def live_template_blanks(dimensions) -> list[list[str]]:
    return [part for part in live_template(dimensions) if not isinstance(part, str)]


def test_fixed_text_is_kept_and_a_single_allowed_string_needs_no_choice(backend: LlamaCppBackend):
    completion = backend.fill_choices(ask(QUESTIONS[0]), ["score=", ["7"], "; sure=", ["yes", "no"], "."])
    assert completion.text in {"score=7; sure=yes.", "score=7; sure=no."}


def test_a_cancelled_fill_raises_and_the_backend_still_answers(backend: LlamaCppBackend):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        backend.fill_choices(ask(QUESTIONS[2]), [[str(value) for value in RANGES[2]]], cancel=cancel)
    assert backend.fill_choices(ask(QUESTIONS[2]), [[str(value) for value in RANGES[2]]]).text.lstrip("-").isdigit()


def test_bad_templates_and_prompts_are_backend_errors(backend: LlamaCppBackend):
    with pytest.raises(BackendError, match="no allowed string"):
        backend.fill_choices(ask(QUESTIONS[0]), ["x", []])
    with pytest.raises(BackendError, match="context window"):
        backend.fill_choices(ask("word " * 1500), [["1", "2"]])


def test_fill_runs_with_a_lora_adapter_active():
    if not ADAPTER.is_file():
        pytest.skip(f"no adapter at {ADAPTER}")
    with create_backend(f"embedded-base+adapter={ADAPTER}", n_ctx=1024, seed=3, repeat_penalty=1.0) as adapted:
        assert adapted.adapter == ADAPTER
        for question, allowed in zip(QUESTIONS[:2], RANGES[:2]):
            assert filled_answer(adapted, question, allowed) == grammar_answer(adapted, question, allowed)
