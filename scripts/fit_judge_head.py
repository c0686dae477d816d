"""Fit the embedded judge's score head on the expert corpus and ship it beside the judge adapter.

    .venv/bin/python scripts/fit_judge_head.py [--ridge 300] [--prompt-tokens 1024] [--dry-run]

For every side of every expert-corpus episode (good and poor), reads the terminal judge prompt
(`judge.judge_messages`) with the shipped judge (`embedded-base+adapter=embedded-judge`, merged)
and keeps its final hidden state; fits one ridge regression per dimension on the training split;
prints the Spearman rank correlation of the head's overall score with the expert's on the
held-out split (the scenarios no adapter was trained on), per dimension too; and writes
models/adapters/embedded-judge.head.json with that provenance. Takes about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sotopia_pi.score_head import spearman  # noqa: E402

JUDGE_MODEL = "embedded-base+adapter=embedded-judge"
HEAD_FILE = REPO / "models" / "adapters" / "embedded-judge.head.json"


def compact(head):
    """The head with 6 significant digits per number (a smaller file; figures are computed after)."""
    from sotopia_pi.score_head import ScoreHead

    def short(values):
        return [float(f"{value:.6g}") for value in values]

    data = head.model_dump()
    data["mean"], data["scale"] = short(data["mean"]), short(data["scale"])
    for dimension in data["dimensions"].values():
        dimension["weights"], dimension["bias"] = short(dimension["weights"]), float(f"{dimension['bias']:.6g}")
    return ScoreHead.model_validate(data)


def corpus_sides(store):
    """(episode, side, split, expert evaluation of that side) for every judged expert side."""
    for episode in store.episodes():
        if "expert" not in episode.tags:
            continue
        reference = store.terminal_evaluation(episode.id)
        split = "heldout" if "split:heldout" in episode.tags else "train"
        for side in (0, 1):
            if reference is not None and reference.agents[side].ok:
                yield episode, side, split, reference.agents[side]


def baselines(target, predicted, good, turns, rows) -> dict:
    """What the figures mean: the head among good episodes only, and the number of turns alone."""
    overall, head = target.mean(axis=1), predicted.mean(axis=1)
    within = rows & good
    return {
        "spearman_overall_good_episodes_only": round(spearman(overall[within], head[within]), 3),
        "spearman_number_of_turns_alone": round(spearman(overall[rows], turns[rows]), 3),
        "spearman_number_of_turns_alone_good_episodes_only": round(spearman(overall[within], turns[within]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ridge", type=float, default=300.0)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    options = parser.parse_args()
    os.environ["SOTOPIA_PI_HOME"] = tempfile.mkdtemp(prefix="judge-head-")

    from sotopia_pi.backends import create_backend, preset_for
    from sotopia_pi.episode_import import import_expert_corpus
    from sotopia_pi.judge import judge_messages, load_dimension_set
    from sotopia_pi.library import ensure_library
    from sotopia_pi.score_head import fit_score_head
    from sotopia_pi.store import Store

    store = Store()
    ensure_library(store)
    import_expert_corpus(store)
    dimensions = load_dimension_set("sotopia")
    names = [d.name for d in dimensions.dimensions]
    assert preset_for("embedded", "judge") == JUDGE_MODEL
    backend = create_backend(JUDGE_MODEL, n_threads=2)
    started = time.perf_counter()
    states, splits, targets, good, turns = [], [], [], [], []
    try:
        for episode, side, split, expert in corpus_sides(store):
            scenario = store.scenario(episode.scenario_id)
            characters = tuple(store.character(c) for c in episode.agent_ids)
            played = store.turns(episode.id)
            messages = judge_messages(scenario, characters, played, side, dimensions)
            states.append(backend.prompt_state(messages, options.prompt_tokens))
            splits.append(split)
            good.append("quality:expert" in episode.tags)
            turns.append(len(played))
            targets.append([expert.scores[name].score for name in names])
    finally:
        backend.close()
    seconds = time.perf_counter() - started
    features, target = np.array(states), np.array(targets, dtype=float)
    train = np.array([s == "train" for s in splits])
    print(f"{len(states)} sides read in {seconds:.0f} s ({train.sum()} training, {(~train).sum()} held-out)")

    ranges = {d.name: (d.low, d.high) for d in dimensions.dimensions}
    head = fit_score_head(
        features[train],
        {name: target[train, i] for i, name in enumerate(names)},
        ranges,
        judge_model=JUDGE_MODEL,
        prompt_tokens=options.prompt_tokens,
        ridge=options.ridge,
    )
    head = compact(head)
    predicted = np.array([[head.scores(state)[name] for name in names] for state in features])
    figures = {}
    for label, rows in (("training", train), ("held-out", ~train)):
        overall = spearman(target[rows].mean(axis=1), predicted[rows].mean(axis=1))
        per_dimension = {name: round(spearman(target[rows, i], predicted[rows, i]), 3) for i, name in enumerate(names)}
        context = baselines(target, predicted, np.array(good), np.array(turns, dtype=float), rows)
        figures[label] = {
            "sides": int(rows.sum()),
            "spearman_overall": round(overall, 3),
            "per_dimension": per_dimension,
            **context,
        }
        print(f"{label:9s} Spearman, head overall vs expert overall: {overall:.2f} on {rows.sum()} sides")
        print("          per dimension: " + ", ".join(f"{k} {v:.2f}" for k, v in per_dimension.items()))
        print("          " + ", ".join(f"{k.removeprefix('spearman_')} {v:.2f}" for k, v in context.items()))
    corpus = sorted((REPO / "scenarios" / "expert").glob("*.json"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in corpus)).hexdigest()
    head.provenance = {
        "fitted_by": "scripts/fit_judge_head.py",
        "corpus_digest": digest,
        "judge_adapter_sha256": hashlib.sha256((HEAD_FILE.with_name("embedded-judge.gguf")).read_bytes()).hexdigest(),
        "feature": "last-token hidden state of the terminal judge prompt (its last prompt_tokens tokens)",
        "seconds_to_read": round(seconds),
        **figures,
    }
    if not options.dry_run:
        HEAD_FILE.write_text(json.dumps(head.model_dump(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {HEAD_FILE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
