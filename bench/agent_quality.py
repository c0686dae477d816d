"""How well the embedded agents and judge do, base model against the shipped adapters, from one run.

    .venv/bin/python bench/agent_quality.py [--episodes-per-scenario 1] [--judge-sample 16] [--max-turns 20]

Uses a throwaway SOTOPIA_PI_HOME: installs the library, imports SOTOPIA's data (for the 14
SOTOPIA-hard scenarios; path from $SOTOPIA_PI_SOTOPIA_DATA or ../shared/sotopia) and the expert corpus.
Prints, for the base model and the adapter, on the SOTOPIA-hard scenarios and on the held-out
library scenarios, same seeds, both sides played by the model under test:

- share of episodes ending before turn 4, mean number of turns, mean turn latency, share of lines
  repeating an earlier line of the episode (the runner asks again for those: bench/echo_guard.py);
- turn latency at equal context: ms per prompt token read and per token generated, same prompts;
- share of valid actions with the grammar off (plain text answers parsed as strict JSON actions);
- per-token negative log-likelihood of the held-out expert turns (transformers + PEFT);
- Spearman rank correlation between the embedded judge's overall scores and the expert's on a
  sample of held-out expert episodes (good and poor mixed): base judge, judge adapter, and the
  judge adapter with its score head (the default embedded judge);
- two sample transcripts, base and adapter, on the same scenario and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

AGENT_ADAPTER = REPO / "models" / "adapters" / "embedded-bc.gguf"
AGENT_ADAPTER_PEFT = REPO / "models" / "adapters" / "embedded-bc"
JUDGE_ADAPTER = REPO / "models" / "adapters" / "embedded-judge.gguf"


def setup_home() -> None:
    home = tempfile.mkdtemp(prefix="agent-quality-")
    os.environ["SOTOPIA_PI_HOME"] = home


def open_store():
    from sotopia_pi.episode_import import import_expert_corpus
    from sotopia_pi.library import ensure_library
    from sotopia_pi.library.sotopia_io import import_sotopia
    from sotopia_pi.store import Store

    store = Store()
    ensure_library(store)
    data = Path(os.environ.get("SOTOPIA_PI_SOTOPIA_DATA", REPO.parent / "shared" / "sotopia"))
    if data.is_dir():
        import_sotopia(store, data)
    import_expert_corpus(store)
    return store


def scenario_sets(store) -> dict[str, list[str]]:
    from sotopia_pi.library.expert_corpus import load_corpus
    from sotopia_pi.library.sotopia_io import SOTOPIA_HARD_SCENARIO_IDS

    known = {s.id for s in store.scenarios()}
    heldout = sorted({item.scenario for item in load_corpus() if item.split == "heldout"})
    by_codename = {s.codename: s.id for s in store.scenarios() if s.codename}
    return {
        "sotopia-hard": [sid for sid in sorted(SOTOPIA_HARD_SCENARIO_IDS) if sid in known],
        "held-out library": [by_codename[c] for c in heldout if c in by_codename],
    }


def play(store, scenario_id: str, model: str, seed: int, max_turns: int, ask_again: int | None = None, **backend_options):
    """One episode, both sides `model` (seeds seed and seed+1), no judge: (episode, turns).
    `ask_again` None: the runner's default."""
    from sotopia_pi.backends import create_backend
    from sotopia_pi.casting import choose_characters
    from sotopia_pi.runner import DEFAULT_ASK_AGAIN, EpisodeSetup, run_episode

    agents = choose_characters(store, scenario_id, None, None)
    backends = {side: create_backend(model, seed=seed + side, n_threads=2, **backend_options) for side in (0, 1)}
    setup = EpisodeSetup(
        scenario_id=scenario_id, agent_ids=agents, agent_models=(model, model), judge_model="",
        max_turns=max_turns, live_eval=False,
        ask_again=DEFAULT_ASK_AGAIN if ask_again is None else ask_again,
    )  # fmt: skip
    try:
        episode = run_episode(store, setup, backends=backends)
    finally:
        for backend in backends.values():
            backend.close()
    return episode, store.turns(episode.id)


def episode_figures(store, scenarios: list[str], model: str, per_scenario: int, max_turns: int) -> dict:
    from sotopia_pi.line_checks import echo_share

    lengths, latencies, transcripts, echoes = [], [], {}, [0, 0]
    for scenario_id in scenarios:
        for k in range(per_scenario):
            episode, turns = play(store, scenario_id, model, seed=1000 + k, max_turns=max_turns)
            lengths.append(len(turns))
            latencies += [t.latency_ms for t in turns]
            echoes = [a + b for a, b in zip(echoes, echo_share(turns))]
            transcripts[(scenario_id, k)] = (episode, turns)
    return {
        "episodes": len(lengths),
        "ended_before_turn_4": sum(n < 4 for n in lengths) / max(len(lengths), 1),
        "mean_turns": statistics.mean(lengths) if lengths else 0.0,
        "mean_turn_ms": statistics.mean(latencies) if latencies else 0.0,
        "repeated_lines": echoes[0] / max(echoes[1], 1),
        "transcripts": transcripts,
    }


def heldout_expert_examples(store):
    from sotopia_pi.dataset.examples import build_examples
    from sotopia_pi.dataset.frozen import freeze_episode

    ids = [e.id for e in store.episodes() if "split:heldout" in e.tags and "quality:expert" in e.tags]
    frozen = [freeze_episode(store, i) for i in ids]
    return build_examples(frozen, [(f.id, side) for f in frozen for side in (0, 1)])


def valid_action_share(model: str, examples, count: int, seed: int = 7) -> dict:
    """Plain generation (no grammar) on held-out expert prompts, parsed as strict JSON actions;
    also the time per prompt token read and per token generated, both models on the same prompts
    (turn latency at equal context: an episode's turn times depend on how long its episode ran)."""
    from sotopia_pi.backends import create_backend
    from sotopia_pi.episode import AgentAction

    rng = random.Random(seed)
    sample = rng.sample(examples, min(count, len(examples)))
    backend = create_backend(model, seed=seed, n_threads=2)
    valid = 0
    read_ms = read_tokens = write_ms = write_tokens = 0.0
    try:
        for example in sample:
            backend.reset_cache()
            read = backend.read_ahead(example.prompt)
            read_ms += read.latency_ms
            read_tokens += read.prompt_tokens
            completion = backend.complete(example.prompt, max_tokens=160, temperature=0.0)
            write_ms += completion.latency_ms
            write_tokens += completion.completion_tokens
            try:
                AgentAction.model_validate(json.loads(completion.text.strip()))
                valid += 1
            except (ValueError, TypeError):
                pass
    finally:
        backend.close()
    return {
        "valid_share": valid / max(len(sample), 1),
        "prompt_ms_per_token": read_ms / max(read_tokens, 1),
        "generated_ms_per_token": write_ms / max(write_tokens, 1),
    }


def heldout_nll(examples, adapter_dir: Path | None) -> float:
    """Mean per-token NLL of the expert's answers (held-out), conversation layout."""
    import torch

    from sotopia_pi.training.examples import build_training_examples, tokenize_examples
    from sotopia_pi.training.worker import load_base

    model, tokenizer = load_base("embedded", "cpu", False)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    tokenized, _ = tokenize_examples(tokenizer, build_training_examples(examples), 2048)
    total, count = 0.0, 0
    with torch.no_grad():
        for item in tokenized:
            ids = torch.tensor([item.input_ids])
            logits = model(ids).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            mask = torch.tensor(item.completion_mask[1:], dtype=torch.bool)
            total += losses[mask].sum().item()
            count += int(mask.sum())
    return total / max(count, 1)


def judge_correlation(store, judge_model: str, sample: int, seed: int = 11, head=None) -> tuple[float, int, int]:
    """(Spearman of embedded-judge vs expert overall, sides compared, judge failures)."""
    from sotopia_pi.backends import create_backend
    from sotopia_pi.judge import JUDGE_SAMPLING, Judge
    from sotopia_pi.score_head import spearman

    episodes = [e for e in store.episodes() if "split:heldout" in e.tags]
    rng = random.Random(seed)
    chosen = rng.sample(episodes, min(sample, len(episodes)))
    backend = create_backend(judge_model, seed=seed, n_threads=2, **JUDGE_SAMPLING)
    judge = Judge(backend, score_head=head)
    expert, model = [], []
    failures = 0
    try:
        for episode in chosen:
            reference = store.terminal_evaluation(episode.id)
            scenario = store.scenario(episode.scenario_id)
            characters = tuple(store.character(c) for c in episode.agent_ids)
            verdict = judge.evaluate(episode.id, scenario, characters, store.turns(episode.id), kind="terminal")
            for side in (0, 1):
                if verdict.agents[side].ok and reference.agents[side].ok:
                    expert.append(reference.agents[side].overall)
                    model.append(verdict.agents[side].overall)
                else:
                    failures += 1
    finally:
        backend.close()
    return spearman(expert, model), len(expert), failures


def judge_figures(store, sample: int) -> None:
    from sotopia_pi.score_head import shipped_score_head

    judges = [("base judge", "embedded-base", None)]
    if JUDGE_ADAPTER.is_file():
        judges.append(("judge adapter", "embedded-base+adapter=embedded-judge", None))
        head = shipped_score_head("embedded-base+adapter=embedded-judge")
        if head is not None:
            judges.append(("adapter + head", "embedded-base+adapter=embedded-judge", head))
    for label, model, head in judges:
        rho, n, failures = judge_correlation(store, model, sample, head=head)
        print(f"{label:14s} Spearman vs expert overall on held-out episodes: {rho:.2f} ({n} sides, {failures} judge failures)")


def render(store, episode, turns) -> str:
    names = [store.character(c).name for c in episode.agent_ids]
    lines = [f"  [{episode.agent_models[0]}] {store.scenario(episode.scenario_id).codename or episode.scenario_id}: {episode.end_reason}"]
    for turn in turns:
        lines.append(f"  #{turn.index} {names[turn.agent]}: {turn.action.to_natural_language()}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes-per-scenario", type=int, default=1)
    parser.add_argument("--max-turns", type=int, default=20)
    parser.add_argument("--judge-sample", type=int, default=16, help="held-out expert episodes the judges score")
    parser.add_argument("--action-sample", type=int, default=40, help="held-out prompts for the no-grammar check")
    parser.add_argument("--skip-judge", action="store_true")
    parser.add_argument("--judge-only", action="store_true", help="only the judge correlation")
    options = parser.parse_args()
    setup_home()
    store = open_store()
    started = time.perf_counter()
    base, tuned = "embedded-base", f"embedded-base+adapter={AGENT_ADAPTER}"
    if options.judge_only:
        judge_figures(store, options.judge_sample)
        return
    sets = scenario_sets(store)
    counts = ", ".join(f"{k} {len(v)}" for k, v in sets.items())
    print(f"scenarios: {counts}; {options.episodes_per_scenario} episode(s) each, max {options.max_turns} turns")
    samples = {}
    for label, model in (("base", base), ("adapter", tuned)):
        for set_name, scenarios in sets.items():
            figures = episode_figures(store, scenarios, model, options.episodes_per_scenario, options.max_turns)
            samples[(label, set_name)] = figures["transcripts"]
            print(
                f"{label:8s} {set_name:17s} episodes {figures['episodes']:3d}  ended before turn 4: "
                f"{figures['ended_before_turn_4']:.0%}  mean turns {figures['mean_turns']:.1f}  "
                f"mean turn {figures['mean_turn_ms'] / 1000:.2f} s  "
                f"lines repeating an earlier one {figures['repeated_lines']:.0%}"
            )
    examples = heldout_expert_examples(store)
    speeds = {}
    for label, model in (("base", base), ("adapter", tuned)):
        figures = speeds[label] = valid_action_share(model, examples, options.action_sample)
        print(
            f"{label:8s} valid actions with the grammar off: {figures['valid_share']:.0%} of "
            f"{min(options.action_sample, len(examples))} held-out prompts; reading the prompt "
            f"{figures['prompt_ms_per_token']:.2f} ms/token, generating {figures['generated_ms_per_token']:.1f} ms/token"
        )
    ratios = [speeds["adapter"][key] / speeds["base"][key] for key in ("prompt_ms_per_token", "generated_ms_per_token")]
    print(f"adapter latency at equal context: {ratios[0]:.2f}x the base reading, {ratios[1]:.2f}x generating")
    base_nll = heldout_nll(examples, None)
    tuned_nll = heldout_nll(examples, AGENT_ADAPTER_PEFT)
    lower = (base_nll - tuned_nll) / base_nll
    print(f"held-out expert turns, per-token NLL: base {base_nll:.3f}, adapter {tuned_nll:.3f} ({lower:.0%} lower)")
    if not options.skip_judge:
        judge_figures(store, options.judge_sample)
    first = sets["sotopia-hard"][0] if sets["sotopia-hard"] else sets["held-out library"][0]
    for label in ("base", "adapter"):
        transcripts = samples.get((label, "sotopia-hard")) or samples[(label, "held-out library")]
        episode, turns = transcripts[(first, 0)]
        print(f"\nsample transcript, {label}:\n{render(store, episode, turns)}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
