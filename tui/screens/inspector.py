"""The episode inspector: a filtered list of stored episodes, and a turn-by-turn replay of one."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from sotopia_pi.episode import Episode, EpisodeStatus, Evaluation, Turn
from sotopia_pi.episode_list import DEFAULT_LIMIT, EpisodeFilter, EpisodeRow, count_episodes, list_episodes
from sotopia_pi.judge import load_dimension_set
from sotopia_pi.store import Store

from ..clipboard import copy, turn_as_text
from ..players import played_by, side_players
from ..widgets.fkeys import FKeyBar
from ..widgets.scores import ComparisonPanel
from ..widgets.transcript import ACTION_LABELS
from .reasoning import ReasoningScreen

RESUMABLE = (EpisodeStatus.paused, EpisodeStatus.running)
FILTER_DELAY = 0.25
COLUMNS = (
    "created", "scenario", "status", "turns", "side 1 played by", "side 2 played by",
    "overall 1", "overall 2", "goal 1", "goal 2", "tags",
)  # fmt: skip


def score_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def row_cells(row: EpisodeRow, players: dict[int, tuple[bool, bool]] | None = None) -> tuple[str, ...]:
    """The table's cells; `players` (side_players of its turns) names who played each side."""
    players = players or {}
    return (
        row.created_at[:19].replace("T", " "),
        row.scenario,
        f"{row.status.value} (error)" if row.last_error and row.status in RESUMABLE else row.status.value,
        str(row.turn_count),
        played_by(row.agent_models[0], *players.get(0, (False, True))),
        played_by(row.agent_models[1], *players.get(1, (False, True))),
        score_cell(row.overall[0]),
        score_cell(row.overall[1]),
        score_cell(row.goal[0]),
        score_cell(row.goal[1]),
        ", ".join(row.tags),
    )


class InspectorScreen(Screen):
    SUB_TITLE = "Inspector — stored episodes"
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("o", "open", "Open"),
        Binding("ctrl+r", "resume", "Resume"),
        Binding("ctrl+l", "clear_filters", "Clear filters"),
        Binding("ctrl+u", "reload", "Reload"),
        Binding("i", "copy_id", "Copy episode id"),
    ]

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        with Horizontal(id="filters"):
            yield Input(placeholder="scenario", id="filter-scenario")
            yield Input(placeholder="model", id="filter-model")
            yield Input(placeholder="adapter", id="filter-adapter")
            yield Input(placeholder="tag", id="filter-tag")
            yield Select([(s.value, s.value) for s in EpisodeStatus], prompt="any status", id="filter-status")
            yield Input(placeholder="min overall", id="filter-score", type="number")
        yield Label("", id="episode-count")
        table: DataTable = DataTable(id="episode-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self._timer = None
        self.reload()
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        self.reload()

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined]

    def _text(self, name: str) -> str:
        return self.query_one(f"#filter-{name}", Input).value

    def filters(self) -> EpisodeFilter:
        value = self._text
        status = self.query_one("#filter-status", Select).value
        score = value("score").strip()
        try:
            min_overall = float(score) if score else None
        except ValueError:
            min_overall = None
        return EpisodeFilter(
            scenario=value("scenario"),
            model=value("model"),
            adapter=value("adapter"),
            tag=value("tag"),
            status=EpisodeStatus(status) if isinstance(status, str) else None,
            min_overall=min_overall,
        )

    def reload(self) -> None:
        filters = self.filters()
        rows = list_episodes(self.store, filters, limit=DEFAULT_LIMIT)
        table = self.query_one(DataTable)
        selected = self.selected_id()
        table.clear()
        for row in rows:
            table.add_row(*row_cells(row, self._players(row)), key=row.id)
        total = len(rows) if len(rows) < DEFAULT_LIMIT else count_episodes(self.store, filters)
        shown = f"{len(rows)} episodes" if total == len(rows) else f"newest {len(rows)} of {total} episodes (narrow the filters)"
        self.query_one("#episode-count", Label).update(
            f"{shown} · Enter or o opens one, ^r resumes an unfinished one"
        )
        if selected is not None and selected in {row.id for row in rows}:
            table.move_cursor(row=table.get_row_index(selected))

    def _players(self, row: EpisodeRow) -> dict[int, tuple[bool, bool]]:
        """Who played each side of a row's episode, read from its turns once per turn count."""
        cache = self.__dict__.setdefault("_players_cache", {})
        known = cache.get(row.id)
        if known is None or known[0] != row.turn_count:
            known = (row.turn_count, side_players(self.store.turns(row.id)))
            cache[row.id] = known
        return known[1]

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    @on(Input.Changed)
    @on(Select.Changed)
    def _filter_changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(FILTER_DELAY, self.reload)

    @on(Input.Submitted)
    def _filter_submitted(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_filter(self) -> None:
        self.query_one("#filter-scenario", Input).focus()

    def action_clear_filters(self) -> None:
        for box in self.query("#filters Input").results(Input):
            box.value = ""
        self.query_one("#filter-status", Select).clear()
        self.reload()

    def action_copy_id(self) -> None:
        episode_id = self.selected_id()
        if episode_id is None:
            self.notify("No episode to copy.")
            return
        copy(self.app, episode_id, "the episode id")

    def action_reload(self) -> None:
        self.reload()

    def action_open(self) -> None:
        episode_id = self.selected_id()
        if episode_id is not None:
            self.app.push_screen(ReplayScreen(self.store, episode_id))

    def action_resume(self) -> None:
        episode_id = self.selected_id()
        if episode_id is not None:
            self.app.resume_episode(episode_id)  # type: ignore[attr-defined]


def turn_label(turn: Turn, names: tuple[str, str]) -> Text:
    argument = " ".join(turn.argument.split())
    if len(argument) > 40:
        argument = argument[:39] + "…"
    who = names[turn.agent] + (" (person)" if turn.by_human else "")
    return Text.assemble((f"#{turn.index} ", "dim"), (who, "bold"), f" [{ACTION_LABELS[turn.action_type]}] ", argument)


def turn_details(turn: Turn) -> Text:
    text = Text()
    text.append(f"Turn #{turn.index} · side {turn.agent + 1} · {turn.action_type.value}\n", style="bold")
    text.append(f"{turn.argument or '(no argument)'}\n")
    if turn.edited_argument is not None:
        text.append(f"edited by the curator to: {turn.edited_argument}\n", style="italic")
    text.append(
        f"model: {turn.model} · {'played by a person · ' if turn.by_human else ''}"
        f"latency {turn.latency_ms:.0f} ms · tokens: {turn.prompt_tokens} prompt "
        f"({turn.cached_tokens} cached), {turn.completion_tokens} generated\n",
        style="dim",
    )
    if turn.parse_note:
        text.append(f"parse note: {turn.parse_note}\n", style="yellow")
    if turn.refused:
        text.append(f"asked again {turn.resamples}x; answers not kept: {'; '.join(turn.refused)}\n", style="yellow")
    faults = ([f"repeats turn #{turn.echoes}"] if turn.echoes is not None else []) + [turn.role_slip] * bool(turn.role_slip)
    if faults:
        text.append(f"kept as the least faulty answer: {'; '.join(faults)}\n", style="yellow")
    if turn.raw_output and not turn.by_human:
        text.append("raw output: ", style="dim")
        text.append(f"{turn.raw_output}\n")
    return text


def prompt_text(turn: Turn) -> Text:
    text = Text()
    if not turn.prompt:
        return Text("(no prompt recorded)", style="dim")
    for message in turn.prompt:
        text.append(f"[{message.role}]\n", style="bold")
        text.append(f"{message.content}\n\n")
    return text


def evaluation_for_turn(history: list[Evaluation], index: int) -> Evaluation | None:
    """The newest provisional evaluation made with at most the turns up to `index`."""
    candidates = [e for e in history if e.kind == "provisional" and e.after_turn <= index]
    return candidates[-1] if candidates else None


class ReplayScreen(Screen):
    """One stored episode, turn by turn: what happened, what each agent saw, the scores."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+r", "resume", "Resume"),
        Binding("t", "terminal_reasoning", "Final reasoning"),
        Binding("e", "turn_reasoning", "Turn reasoning"),
        Binding("v", "toggle_prompt", "Agent's view"),
        Binding("c", "copy_turn", "Copy turn"),
        Binding("i", "copy_id", "Copy episode id"),
    ]

    def __init__(self, store: Store, episode_id: str) -> None:
        super().__init__()
        self.store = store
        self.episode: Episode = store.episode(episode_id)
        self.scenario = store.scenario(self.episode.scenario_id)
        characters = [store.character(cid) for cid in self.episode.agent_ids]
        self.names = (characters[0].name, characters[1].name)
        self.turns = store.turns(episode_id)
        self.history = store.evaluations(episode_id)
        self.terminal = store.terminal_evaluation(episode_id)
        self.dimensions = load_dimension_set(self.episode.settings.get("dimension_set", "sotopia"))

    def compose(self) -> ComposeResult:
        yield Static(self.header_text(), id="replay-header")
        with Horizontal(id="replay-body"):
            yield OptionList(
                *[Option(turn_label(t, self.names), id=str(t.index)) for t in self.turns],
                id="turn-list",
            )
            with VerticalScroll(id="turn-detail"):
                yield Static(id="turn-info")
                yield ComparisonPanel(self.names, self.dimensions, id="replay-scores")
                yield Label("What this agent saw (its rendered context)", classes="section", id="prompt-label")
                yield Static(id="turn-prompt")
        yield Footer(compact=True)

    def header_text(self) -> Text:
        episode = self.episode
        text = Text()
        text.append(f"{self.scenario.codename or self.scenario.id}  ", style="bold")
        players = side_players(self.turns)
        who = [played_by(episode.agent_models[side], *players.get(side, (False, True))) for side in (0, 1)]
        text.append(
            f"{self.names[0]} (side 1): {who[0]}  vs  "
            f"{self.names[1]} (side 2): {who[1]}  · judge: {episode.judge_model or 'none'}\n"
        )
        text.append(f"episode {episode.id} · {episode.status.value} · {len(self.turns)} turns", style="dim")
        if episode.end_reason:
            text.append(f" · ended: {episode.end_reason}", style="dim")
        if episode.tags:
            text.append(f" · tags: {', '.join(episode.tags)}", style="dim")
        if episode.last_error:
            text.append(f"\nlast error: {episode.last_error}", style="red")
        if episode.status in RESUMABLE:
            text.append("\nunfinished: ^r resumes it", style="yellow")
        return text

    def on_mount(self) -> None:
        self.query_one(ComparisonPanel).show(None, self.terminal, [])
        turn_list = self.query_one("#turn-list", OptionList)
        if self.turns:
            turn_list.highlighted = 0
        else:
            self.query_one("#turn-info", Static).update("No turns were played.")
        turn_list.focus()

    @on(OptionList.OptionHighlighted, "#turn-list")
    def _turn_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_turn(int(event.option.id or 0))

    def show_turn(self, index: int) -> None:
        turn = self.turns[index]
        self.current = turn
        self.query_one("#turn-info", Static).update(turn_details(turn))
        so_far = [e for e in self.history if e.kind == "provisional" and e.after_turn <= index]
        self.query_one(ComparisonPanel).show(evaluation_for_turn(self.history, index), self.terminal, so_far)
        self.query_one("#turn-prompt", Static).update(prompt_text(turn))

    def action_toggle_prompt(self) -> None:
        for widget_id in ("#turn-prompt", "#prompt-label"):
            widget = self.query_one(widget_id)
            widget.display = not widget.display

    def action_terminal_reasoning(self) -> None:
        if self.terminal is None:
            self.notify("This episode has no terminal score.")
            return
        self.app.push_screen(ReasoningScreen(self.terminal, self.names, self.dimensions))

    def action_turn_reasoning(self) -> None:
        evaluation = self.query_one(ComparisonPanel).provisional
        if evaluation is None:
            self.notify("No provisional score up to this turn.")
            return
        self.app.push_screen(ReasoningScreen(evaluation, self.names, self.dimensions))

    def action_copy_turn(self) -> None:
        if getattr(self, "current", None) is None:
            self.notify("No turn to copy.")
            return
        copy(self.app, turn_as_text(self.current, self.names), f"turn #{self.current.index}")

    def action_copy_id(self) -> None:
        copy(self.app, self.episode.id, "the episode id")

    def action_resume(self) -> None:
        if self.episode.status not in RESUMABLE:
            self.notify(f"This episode is {self.episode.status.value}; only unfinished ones resume.")
            return
        self.app.resume_episode(self.episode.id)  # type: ignore[attr-defined]
