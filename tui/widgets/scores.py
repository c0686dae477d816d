"""The score panel: both agents' dimensions, provisional or terminal, and a chart of how they moved."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar, Static
from textual_plotext import PlotextPlot

from sotopia_pi.episode import Evaluation
from sotopia_pi.judge import DimensionSet

BARS = "▁▂▃▄▅▆▇█"
SWAP_MARK = "┃"  # in a side's trend: its adapter changed here


def spark(values: Sequence[float], low: float, high: float) -> str:
    """A one-line chart on a fixed scale (so that a flat line means flat scores)."""
    if high <= low:
        return ""
    cells = []
    for value in values:
        share = (min(max(value, low), high) - low) / (high - low)
        cells.append(BARS[round(share * (len(BARS) - 1))])
    return "".join(cells)


def overall_range(dimensions: DimensionSet) -> tuple[float, float]:
    count = len(dimensions.dimensions)
    return (
        sum(d.low for d in dimensions.dimensions) / count,
        sum(d.high for d in dimensions.dimensions) / count,
    )


def evaluation_title(evaluation: Evaluation | None) -> Text:
    if evaluation is None:
        return Text("No scores yet", style="dim")
    turn = f"after turn #{evaluation.after_turn}" if evaluation.after_turn >= 0 else "before any turn"
    if evaluation.kind == "terminal":
        return Text.assemble(("TERMINAL", "bold green"), f" · official score · {turn}")
    return Text.assemble(("PROVISIONAL", "bold yellow"), f" · {turn} · the official score comes at the end")


def _short(name: str) -> str:
    """A column-sized name: the first name, cut to ten characters."""
    first = name.split()[0] if name.split() else name
    return first if len(first) <= 10 else first[:9] + "…"


COMPACT_NAME = 14  # a dimension's name in a narrow panel


def dimension_label(name: str, compact: bool) -> str:
    return name if not compact or len(name) <= COMPACT_NAME else name[: COMPACT_NAME - 1] + "…"


def score_table(
    evaluation: Evaluation | None, names: tuple[str, str], dimensions: DimensionSet, compact: bool = False
) -> Table:
    """One row per dimension, a column per side; `compact` (a narrow panel) drops the range
    column and shortens long dimension names."""
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("dimension", no_wrap=True)
    if not compact:
        table.add_column("range", justify="right", style="dim")
    for name in names:
        table.add_column(_short(name), justify="right")
    agents = evaluation.agents if evaluation is not None else []
    for dim in dimensions.dimensions:
        cells = []
        for side in (0, 1):
            agent = agents[side] if agents else None
            if agent is None:
                cells.append(Text("-", style="dim"))
            elif not agent.ok:
                cells.append(Text("failed", style="bold red"))
            elif dim.name in agent.scores:
                cells.append(Text(str(agent.scores[dim.name].score)))
            else:
                cells.append(Text("?", style="dim"))
        ranges = [] if compact else [f"{dim.low}..{dim.high}"]
        table.add_row(dimension_label(dim.name, compact), *ranges, *cells)
    overall = []
    for side in (0, 1):
        agent = agents[side] if agents else None
        value = agent.overall if agent is not None and agent.ok else None
        overall.append(Text(f"{value:.2f}" if value is not None else "-", style="bold"))
    table.add_row(Text("overall", style="bold"), *([] if compact else ["mean"]), *overall)
    return table


def marked_spark(values: Sequence[tuple[int, float]], swaps: Sequence[int], low: float, high: float) -> Text:
    """The spark line of (after turn, score) pairs with SWAP_MARK before the first evaluation
    that saw each swap (a swap from turn k shows in evaluations after turn k or later)."""
    text = Text()
    pending = sorted(swaps)
    for after_turn, value in values:
        while pending and pending[0] <= after_turn:
            text.append(SWAP_MARK, style="bold magenta")
            pending.pop(0)
        text.append(spark([value], low, high))
    for _ in pending:  # no evaluation since the swap yet
        text.append(SWAP_MARK, style="bold magenta")
    return text


def trend_lines(
    history: Sequence[Evaluation],
    names: tuple[str, str],
    dimensions: DimensionSet,
    swaps: Sequence[tuple[int, int, str]] = (),
) -> list[Text]:
    """Overall score per evaluation, per side: ▁ is the lowest possible, █ the highest.
    `swaps` (turn index, side, label): a side's adapter changed from that turn; each shows as
    SWAP_MARK in its side's line and in a legend line."""
    low, high = overall_range(dimensions)
    lines = []
    for side in (0, 1):
        values = [
            (e.after_turn, e.agents[side].overall)
            for e in history
            if e.agents[side].ok and e.agents[side].overall is not None
        ]
        side_swaps = [turn for turn, swap_side, _ in swaps if swap_side == side]
        chart = marked_spark(values, side_swaps, low, high)
        if not values:
            chart.append("(no scores yet)")
        last = f" {values[-1][1]:.2f}" if values else ""
        lines.append(Text.assemble((f"{_short(names[side]):<11}", "bold"), chart, last))
    for turn, side, label in swaps:
        lines.append(Text.assemble((SWAP_MARK, "bold magenta"), f" {_short(names[side])}: {label} from turn #{turn}"))
    return lines


def failures(evaluation: Evaluation | None, names: tuple[str, str]) -> list[Text]:
    if evaluation is None:
        return []
    return [
        Text(f"Judge failed for {names[side]}: {agent.failure}", style="red")
        for side, agent in enumerate(evaluation.agents)
        if not agent.ok
    ]


SIDE_COLORS = ("cyan", "orange")
COMPACT_BELOW = 56  # columns: a narrower panel gets the compact score table
SWAP_COLOR = "magenta"


def chart_series(
    history: Sequence[Evaluation], side: int, dimension: str | None
) -> tuple[list[int], list[float]]:
    """(turns, values) of one side's live scores: the overall score, or one dimension's.
    Only provisional evaluations: one point per scored turn (the terminal one is in the table)."""
    turns: list[int] = []
    values: list[float] = []
    for evaluation in history:
        agent = evaluation.agents[side]
        if evaluation.kind != "provisional" or not agent.ok:
            continue
        if dimension is None:
            value = agent.overall
        else:
            score = agent.scores.get(dimension)
            value = score.score if score is not None else None
        if value is not None:
            turns.append(evaluation.after_turn)
            values.append(float(value))
    return turns, values


def skipped_note(history: Sequence[Evaluation]) -> str:
    """Says which turns the live judge skipped because it fell behind ("" when none)."""
    skipped = sorted({turn for e in history if e.kind == "provisional" for turn in e.skipped_turns})
    if not skipped:
        return ""
    listed = ", ".join(f"#{turn}" for turn in skipped)
    plural = "s" if len(skipped) > 1 else ""
    return f"The live judge fell behind and skipped turn{plural} {listed}: it scored the newest turn instead."


def swap_legend(names: tuple[str, str], swaps: Sequence[tuple[int, int, str]]) -> list[Text]:
    return [
        Text.assemble((SWAP_MARK, f"bold {SWAP_COLOR}"), f" {_short(names[side])}: {label} from turn #{turn}")
        for turn, side, label in swaps
    ]


class ScorePanel(Vertical):
    """The newest evaluation as a table, and the live scores as a chart against the turn:
    each side's overall score and, when one is chosen, one dimension (`cycle_dimension`).
    Adapter swaps are vertical lines; a bar runs while the terminal evaluation is made."""

    def __init__(self, names: tuple[str, str], dimensions: DimensionSet, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = names
        self.dimensions = dimensions
        self.evaluation: Evaluation | None = None
        self.history: list[Evaluation] = []
        self.note = ""
        self.swaps: list[tuple[int, int, str]] = []
        self.dimension: str | None = None  # charted beside the overall score
        self.judging_since: float | None = None
        self._words: dict[str, object] = {}  # what each Static says, by part

    def compose(self) -> ComposeResult:
        yield Static(id="scores-title")
        yield Static(id="scores-table")
        yield PlotextPlot(id="scores-chart")
        yield Static(id="scores-notes")
        with Horizontal(id="scores-judging"):  # its bar is mounted only while the judge works
            yield Static(id="scores-judging-label")

    def on_mount(self) -> None:
        self.query_one("#scores-judging").display = False
        self.set_interval(1.0, self._tick_judging)
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def show(self, evaluation: Evaluation | None, history: Sequence[Evaluation], note: str = "") -> None:
        self.evaluation = evaluation
        self.history = list(history)
        self.note = note
        self._redraw()

    def show_swaps(self, swaps: Sequence[tuple[int, int, str]]) -> None:
        """Adapter swaps to mark on the chart: (turn index, side, label)."""
        if list(swaps) != self.swaps:
            self.swaps = list(swaps)
            self._redraw()

    def cycle_dimension(self) -> str | None:
        """Chart the next dimension beside the overall score (after the last: none). Returns it."""
        names = [None, *(d.name for d in self.dimensions.dimensions)]
        self.dimension = names[(names.index(self.dimension) + 1) % len(names)]
        self._redraw()
        return self.dimension

    def set_judging(self, judging: bool) -> None:
        """Show (or hide) that the judge is making the terminal evaluation."""
        if judging == (self.judging_since is not None):
            return
        self.judging_since = time.monotonic() if judging else None
        row = self.query_one("#scores-judging", Horizontal)
        row.display = judging
        # An indeterminate bar animates all the time, even hidden: it exists only while needed.
        if judging:
            row.mount(ProgressBar(total=None, show_eta=False, show_percentage=False), before=0)
        else:
            row.query(ProgressBar).remove()
        self._tick_judging()

    def _tick_judging(self) -> None:
        if self.judging_since is None:
            return
        seconds = time.monotonic() - self.judging_since
        self.query_one("#scores-judging-label", Static).update(
            f" The judge is scoring the whole episode ({seconds:.0f} s; it takes tens of seconds)"
        )

    def text(self, width: int = 100) -> str:
        """Everything the panel says in words (for tests), the chart aside."""
        console = Console(width=width, file=io.StringIO(), record=True)
        for part in self._words.values():
            console.print(part)
        if self.judging_since is not None:
            console.print(self.query_one("#scores-judging-label", Static).content)
        return console.export_text()

    def _say(self, part: str, renderable) -> None:
        self._words[part] = renderable
        self.query_one(f"#scores-{part}", Static).update(renderable)

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        title = Text()
        title.append_text(evaluation_title(self.evaluation))
        if self.note:
            title.append("\n" + self.note, style="dim")
        self._say("title", title)
        compact = 0 < self.size.width < COMPACT_BELOW
        table = score_table(self.evaluation, self.names, self.dimensions, compact)
        self._say("table", Group(table, *failures(self.evaluation, self.names)))
        notes = swap_legend(self.names, self.swaps)
        skipped = skipped_note(self.history)
        if skipped:
            notes.append(Text(skipped, style="yellow"))
        chart = self.query_one("#scores-chart", PlotextPlot)
        live = sum(1 for e in self.history if e.kind == "provisional")
        chart.display = live > 0 or bool(self.swaps)
        if not chart.display:
            notes.insert(0, Text("The chart of live scores fills in as turns are scored.", style="dim"))
        self._say("notes", Group(*notes))
        self._draw_chart()

    def _draw_chart(self) -> None:
        chart = self.query_one("#scores-chart", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        low, high = overall_range(self.dimensions)
        label = "overall"
        if self.dimension is not None:
            dim = next(d for d in self.dimensions.dimensions if d.name == self.dimension)
            low, high = min(low, dim.low), max(high, dim.high)
            label = f"overall (●) and {dim.name} (x)"
        plt.title(f"live scores: {label}")
        last_turn = 1
        for side in (0, 1):
            name = _short(self.names[side])
            turns, values = chart_series(self.history, side, None)
            if turns:
                plt.plot(turns, values, label=name, marker="braille", color=SIDE_COLORS[side])
                plt.scatter(turns, values, marker="●", color=SIDE_COLORS[side])  # a lone score shows too
                last_turn = max(last_turn, turns[-1])
            if self.dimension is not None:
                turns, values = chart_series(self.history, side, self.dimension)
                if turns:
                    plt.scatter(turns, values, marker="x", color=SIDE_COLORS[side])
        for turn, _side, _label in self.swaps:
            plt.vline(turn, SWAP_COLOR)
            last_turn = max(last_turn, turn)
        plt.xlim(0, last_turn)
        step = max(1, -(-last_turn // 6))  # at most about seven whole-turn ticks
        ticks = list(range(0, last_turn + 1, step))
        plt.xticks(ticks, [f"#{turn}" for turn in ticks])
        plt.ylim(low, high)
        plt.xlabel("turn")
        chart.refresh()


def reasoning_text(evaluation: Evaluation, names: tuple[str, str], dimensions: DimensionSet) -> Text:
    """Everything the judge said, dimension by dimension, for both agents."""
    text = Text()
    text.append_text(evaluation_title(evaluation))
    text.append(f"\njudge: {evaluation.judge_model} · {evaluation.latency_ms / 1000:.1f} s\n")
    for side, agent in enumerate(evaluation.agents):
        text.append(f"\n{names[side]}\n", style="bold underline")
        if not agent.ok:
            text.append(f"  judge failed: {agent.failure}\n", style="red")
            continue
        for dim in dimensions.dimensions:
            score = agent.scores.get(dim.name)
            if score is None:
                continue
            text.append(f"  {dim.name} = {score.score}", style="bold")
            text.append(f" ({dim.low}..{dim.high})\n", style="dim")
            text.append(f"    {score.reasoning or '(no reasoning given)'}\n")
        if agent.overall is not None:
            text.append(f"  overall = {agent.overall:.2f}\n", style="bold")
    return text


def comparison_table(
    provisional: Evaluation | None,
    terminal: Evaluation | None,
    names: tuple[str, str],
    dimensions: DimensionSet,
    compact: bool = False,
) -> Table:
    """Scores after one turn beside the official ones: one row per dimension, four columns
    (`compact`: no range column, long dimension names shortened)."""
    table = Table(box=None, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("dimension", no_wrap=True)
    if not compact:
        table.add_column("range", justify="right", style="dim", no_wrap=True)
    turn = f"@#{provisional.after_turn}" if provisional is not None else "@turn"
    for side in (1, 2):
        table.add_column(f"s{side} {turn}", justify="right", style="yellow", no_wrap=True)
    for side in (1, 2):
        table.add_column(f"s{side} final", justify="right", style="green", no_wrap=True)

    def cell(evaluation: Evaluation | None, side: int, dimension: str | None) -> Text:
        if evaluation is None:
            return Text("-", style="dim")
        agent = evaluation.agents[side]
        if not agent.ok:
            return Text("failed", style="bold red")
        if dimension is None:
            return Text(f"{agent.overall:.2f}" if agent.overall is not None else "-", style="bold")
        score = agent.scores.get(dimension)
        return Text(str(score.score)) if score is not None else Text("?", style="dim")

    for dim in dimensions.dimensions:
        table.add_row(
            dimension_label(dim.name, compact),
            *([] if compact else [f"{dim.low}..{dim.high}"]),
            *(cell(e, side, dim.name) for e in (provisional, terminal) for side in (0, 1)),
        )
    table.add_row(
        Text("overall", style="bold"),
        *([] if compact else ["mean"]),
        *(cell(e, side, None) for e in (provisional, terminal) for side in (0, 1)),
    )
    return table


class ComparisonPanel(Static):
    """For the replay: the provisional score after the chosen turn beside the terminal one."""

    def __init__(self, names: tuple[str, str], dimensions: DimensionSet, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = names
        self.dimensions = dimensions
        self.provisional: Evaluation | None = None
        self.terminal: Evaluation | None = None
        self.history: list[Evaluation] = []
        self._shown = False

    def on_resize(self) -> None:
        if self._shown:  # the table's columns depend on the width
            self.show(self.provisional, self.terminal, self.history)

    def show(
        self,
        provisional: Evaluation | None,
        terminal: Evaluation | None,
        history: Sequence[Evaluation],
    ) -> None:
        self.provisional = provisional
        self.terminal = terminal
        self.history = list(history)
        self._shown = True
        parts: list = [
            Text.assemble(
                ("provisional ", "bold yellow"),
                "after this turn: " + (f"judged after turn #{provisional.after_turn}" if provisional else "none yet"),
            ),
            Text.assemble(
                ("terminal ", "bold green"),
                "(official): " + ("scored" if terminal else "not scored (yet)"),
            ),
            Text(f"s1 = {self.names[0]} · s2 = {self.names[1]}", style="dim"),
            comparison_table(provisional, terminal, self.names, self.dimensions, 0 < self.size.width < COMPACT_BELOW),
        ]
        parts.extend(failures(provisional, self.names))
        parts.extend(failures(terminal, self.names))
        parts.append(Text(f"overall per evaluation up to this turn ({len(history)})", style="dim"))
        parts.extend(trend_lines(history, self.names, self.dimensions))
        self.update(Group(*parts))
