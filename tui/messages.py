"""Runner callbacks turned into Textual messages.

The runner calls `RunnerEvents` on its own thread (and the live judge on another);
`post_message` is thread-safe and never blocks, so the model never waits for the screen.
Token and score messages replace an older one still waiting in the queue: when the screen
falls behind, it skips to the newest text instead of replaying every token.
"""

from __future__ import annotations

from textual.message import Message
from textual.message_pump import MessagePump

from sotopia_pi.episode import Episode, Evaluation, Turn
from sotopia_pi.runner import RunnerEvents


class TurnStarted(Message):
    def __init__(self, episode_id: str, index: int, agent: int, by_human: bool) -> None:
        super().__init__()
        self.episode_id = episode_id
        self.index = index
        self.agent = agent
        self.by_human = by_human


class TokenStreamed(Message):
    def __init__(self, episode_id: str, index: int, agent: int, argument: str) -> None:
        super().__init__()
        self.episode_id = episode_id
        self.index = index
        self.agent = agent
        self.argument = argument

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, TokenStreamed)
            and message.episode_id == self.episode_id
            and message.index == self.index
        )


class TurnCommitted(Message):
    def __init__(self, turn: Turn) -> None:
        super().__init__()
        self.turn = turn


class EvaluationArrived(Message):
    """A provisional or terminal evaluation was stored. A waiting provisional one gives way to
    a newer one; the screen re-reads the history from the store, so the chart loses nothing."""

    def __init__(self, evaluation: Evaluation) -> None:
        super().__init__()
        self.evaluation = evaluation

    def can_replace(self, message: Message) -> bool:
        return (
            self.evaluation.kind == "provisional"
            and isinstance(message, EvaluationArrived)
            and message.evaluation.episode_id == self.evaluation.episode_id
        )


class StatusChanged(Message):
    def __init__(self, episode: Episode) -> None:
        super().__init__()
        self.episode = episode


class PostingEvents(RunnerEvents):
    """Posts every runner event to one message pump (the live episode screen)."""

    def __init__(self, target: MessagePump) -> None:
        self.target = target

    def _post(self, message: Message) -> None:
        # post_message returns False once the screen has closed; the runner goes on without it.
        self.target.post_message(message)

    def turn_started(self, episode_id: str, index: int, agent: int, by_human: bool) -> None:
        self._post(TurnStarted(episode_id, index, agent, by_human))

    def token(self, episode_id: str, index: int, agent: int, argument_so_far: str) -> None:
        self._post(TokenStreamed(episode_id, index, agent, argument_so_far))

    def turn_committed(self, turn: Turn) -> None:
        self._post(TurnCommitted(turn.model_copy(deep=True)))

    def evaluation(self, evaluation: Evaluation) -> None:
        self._post(EvaluationArrived(evaluation.model_copy(deep=True)))

    def status_changed(self, episode: Episode) -> None:
        self._post(StatusChanged(episode.model_copy(deep=True)))
