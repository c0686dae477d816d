"""Judging a finished episode again, when its official (terminal) evaluation failed.

The failed evaluation stays on record: the new one is added beside it, and being the newest it
becomes the episode's official score. The episode's lease is held meanwhile, so a `resume` of
the same episode cannot add a second terminal evaluation at the same time.
"""

from __future__ import annotations

from collections.abc import Callable

from .backends import BackendError, ChatBackend, create_backend, parse_model_name
from .episode import AgentEvaluation, EpisodeStatus, Evaluation
from .model_text import clean_text
from .redaction import redact
from .runner import EpisodeError, EpisodeRunner
from .store import Store


def rejudge_episode(
    store: Store,
    episode_id: str,
    *,
    judge_model: str | None = None,
    force: bool = False,
    judge_backend: ChatBackend | None = None,
    backend_factory: Callable[..., ChatBackend] = create_backend,
) -> Evaluation:
    """Add a new terminal evaluation to a finished episode and return it (it may be a failure
    again, recorded as such). Refuses an unfinished episode, and one whose official score is
    fine unless `force`. Raises EpisodeError, NotFound or leases.EpisodeBusy."""
    episode = store.episode(episode_id)
    if episode.status != EpisodeStatus.finished:
        raise EpisodeError(
            f"episode {episode.id} is {episode.status.value}; only a finished episode is judged "
            f"again (continue it with: sotopia-pi resume {episode.id})"
        )
    latest = store.terminal_evaluation(episode.id)
    if latest is not None and latest.ok and not force:
        raise EpisodeError(f"episode {episode.id} already has an official score; pass --force to judge it again")
    model = judge_model or episode.judge_model
    if not model and judge_backend is None:
        raise EpisodeError(f"episode {episode.id} was played without a judge; name one with --judge MODEL")
    if judge_model:
        parse_model_name(judge_model)
    runner = EpisodeRunner(store, episode.id, judge_backend=judge_backend, backend_factory=backend_factory)
    try:
        runner.claim()
        if judge_model and judge_backend is None:
            runner.episode.judge_model = judge_model  # in memory only: the record keeps the first judge
        return _evaluate(runner, model)
    finally:
        runner.close()


def _evaluate(runner: EpisodeRunner, model: str) -> Evaluation:
    try:
        judge = runner.judge()
        assert judge is not None
        evaluation = judge.evaluate(
            runner.episode.id, runner.scenario, runner.characters, runner.turns, kind="terminal"
        )
    except BackendError as error:
        failure = AgentEvaluation(failure=f"judge model failed: {redact(clean_text(str(error)))}")
        evaluation = Evaluation(
            episode_id=runner.episode.id,
            kind="terminal",
            after_turn=runner.turns[-1].index if runner.turns else -1,
            judge_model=model,
            dimension_set=runner.settings.get("dimension_set", "sotopia"),
            agents=[failure, failure],
        )
    runner.store.add_evaluation(evaluation)
    return evaluation
