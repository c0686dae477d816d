"""Scenario generation on a model: how many answers are usable, and how long a scenario takes.

    .venv/bin/python bench/bench_generate.py [COUNT] [MODEL] [RANDOM_SEED]

Uses a throwaway store (the built-in library installed), generates COUNT scenarios (default 5)
with MODEL (default `embedded`), and prints: loading and installing the library, answers tried,
the share accepted, seconds per answer and per stored scenario, and why answers were rejected.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from collections import Counter

from sotopia_pi.backends import create_backend
from sotopia_pi.library import ensure_library, load_library
from sotopia_pi.library.generate import generate_scenarios
from sotopia_pi.store import Store


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    model = sys.argv[2] if len(sys.argv) > 2 else "embedded"
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with tempfile.TemporaryDirectory() as home:
        os.environ["SOTOPIA_PI_HOME"] = home
        started = time.perf_counter()
        library = load_library()
        loaded = time.perf_counter()
        with Store() as store:
            ensure_library(store)
            installed = time.perf_counter()
            backend = create_backend(model, seed=seed) if model == "embedded" else create_backend(model)
            began = time.perf_counter()
            report = generate_scenarios(store, backend, count, library=library, rng=random.Random(seed))
            elapsed = time.perf_counter() - began
            backend.close()
    answers = len(report.attempts)
    stored = len(report.generated)
    print(f"library load: {1000 * (loaded - started):.0f} ms; install into an empty store: {1000 * (installed - loaded):.0f} ms")
    print(f"model: {report.model}; scenarios stored: {stored} of {count}; answers tried: {answers}")
    print(f"accepted share: {stored / answers:.0%}" if answers else "accepted share: n/a")
    print(f"seconds per answer: {elapsed / max(answers, 1):.1f}; per stored scenario: {elapsed / max(stored, 1):.1f}")
    reasons = Counter(a.problem.split(";")[0].split(" (")[0][:60] for a in report.attempts if not a.accepted)
    for reason, times in reasons.most_common():
        print(f"  rejected x{times}: {reason}")


if __name__ == "__main__":
    main()
