"""Does the embedded judge's probability-weighted score rank episodes as the expert does, where
its greedy score does not? (G-Eval's trick: read the distribution over the allowed integers at
each score instead of taking the likeliest.)

    .venv/bin/python bench/judge_expected_scores.py [JUDGE_MODEL] [EPISODES]

JUDGE_MODEL defaults to the shipped judge (embedded-base+adapter=models/adapters/embedded-judge.gguf),
EPISODES to 16 held-out expert episodes (the sample bench/agent_quality.py --judge-only scores).
For each side the judge writes its terminal evaluation as it does in the app (greedy, under the
grammar); then, reading its own answer back up to each `"score": `, the expected value of the
allowed integers replaces the one it wrote. Prints each side, then Spearman against the expert's
overall score for both readings, and per dimension.
"""

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import agent_quality as aq  # noqa: E402

aq.setup_home()
store = aq.open_store()
from sotopia_pi.backends import create_backend  # noqa: E402
from sotopia_pi.backends.llama_native import chat_prompt_tokens, read_prompt  # noqa: E402
from sotopia_pi.judge import JUDGE_SAMPLING, Judge, judge_messages  # noqa: E402
from sotopia_pi.score_head import spearman  # noqa: E402

judge_model = sys.argv[1] if len(sys.argv) > 1 else f"embedded-base+adapter={aq.JUDGE_ADAPTER}"
sample = int(sys.argv[2]) if len(sys.argv) > 2 else 16
episodes = [e for e in store.episodes() if "split:heldout" in e.tags]
chosen = random.Random(11).sample(episodes, min(sample, len(episodes)))
backend = create_backend(judge_model, seed=11, n_threads=2, **JUDGE_SAMPLING)
judge = Judge(backend)
llm = backend.llm
dims = judge.dimensions


def softmax(x):
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()


def expected(prefix_tokens, low, high):
    """The expected score after `prefix_tokens`, and the probability mass on allowed integers."""
    strings = [str(v) for v in range(low, high + 1)]
    toks = {s: llm.tokenize(s.encode(), add_bos=False, special=False) for s in strings}
    cache = {}

    def probs(path):
        key = tuple(path)
        if key not in cache:
            _, logits = read_prompt(llm, prefix_tokens + list(path))
            cache[key] = softmax(np.asarray(logits, dtype=np.float64))
        return cache[key]

    p = {}
    for s, ts in toks.items():
        prob = 1.0
        for i, t in enumerate(ts):
            prob *= probs(ts[:i])[t]
        # ends here rather than going on to a longer allowed string
        longer = [o for o, ot in toks.items() if len(ot) > len(ts) and ot[: len(ts)] == ts]
        if longer:
            nxt = probs(ts)
            prob *= 1 - sum(nxt[toks[o][len(ts)]] for o in set(longer))
        p[s] = prob
    total = sum(p.values())
    return sum(int(s) * v for s, v in p.items()) / total, total


rows = []
started = time.time()
for episode in chosen:
    reference = store.terminal_evaluation(episode.id)
    scenario = store.scenario(episode.scenario_id)
    characters = tuple(store.character(c) for c in episode.agent_ids)
    turns = store.turns(episode.id)
    verdict = judge.evaluate(episode.id, scenario, characters, turns, kind="terminal")
    for side in (0, 1):
        va = verdict.agents[side]
        if not (va.ok and reference.agents[side].ok):
            print("failure", episode.id, side, flush=True)
            continue
        messages = judge_messages(scenario, characters, turns, side, dims)
        prompt = chat_prompt_tokens(llm, [{"role": m.role, "content": m.content} for m in messages])
        # the judge's own answer, rebuilt in its JSON shape, up to each score
        evs, masses = [], []
        text = "{"
        for i, d in enumerate(dims.dimensions):
            reason = va.scores[d.name].reasoning
            text += (
                ("" if i == 0 else ", ") + json.dumps(d.name) + ': {"reasoning": ' + json.dumps(reason) + ', "score": '
            )
            ev, mass = expected(prompt + llm.tokenize(text.encode(), add_bos=False, special=False), d.low, d.high)
            evs.append(ev)
            masses.append(mass)
            text += str(va.scores[d.name].score) + "}"
        rows.append(
            {
                "episode": episode.id,
                "side": side,
                "expert": reference.agents[side].overall,
                "greedy": va.overall,
                "expected": float(np.mean(evs)),
                "mass": float(np.mean(masses)),
                "greedy_dims": {d: s.score for d, s in va.scores.items()},
                "ev_dims": dict(zip([d.name for d in dims.dimensions], [round(e, 2) for e in evs])),
                "expert_dims": {d: s.score for d, s in reference.agents[side].scores.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
print("elapsed", time.time() - started)
ex = [r["expert"] for r in rows]
print("greedy spearman", spearman(ex, [r["greedy"] for r in rows]))
print("expected spearman", spearman(ex, [r["expected"] for r in rows]))
for d in [d.name for d in dims.dimensions]:
    e = [r["expert_dims"][d] for r in rows]
    print(
        d,
        "greedy",
        round(spearman(e, [r["greedy_dims"][d] for r in rows]), 2),
        "expected",
        round(spearman(e, [r["ev_dims"][d] for r in rows]), 2),
    )
backend.close()
