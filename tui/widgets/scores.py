"""The score panel: both agents' dimensions, provisional or terminal, and how they moved."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

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


def score_table(
    evaluation: Evaluation | None, names: tuple[str, str], dimensions: DimensionSet
) -> Table:
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("dimension", no_wrap=True)
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
        table.add_row(dim.name, f"{dim.low}..{dim.high}", *cells)
    overall = []
    for side in (0, 1):
        agent = agents[side] if agents else None
        value = agent.overall if agent is not None and agent.ok else None
        overall.append(Text(f"{value:.2f}" if value is not None else "-", style="bold"))
    table.add_row(Text("overall", style="bold"), "mean", *overall)
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


class ScorePanel(Static):
    """Shows one evaluation (the newest) and the trend over all of them."""

    def __init__(self, names: tuple[str, str], dimensions: DimensionSet, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = names
        self.dimensions = dimensions
        self.evaluation: Evaluation | None = None
        self.history: list[Evaluation] = []
        self.note = ""
        self.swaps: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self._redraw()

    def show(self, evaluation: Evaluation | None, history: Sequence[Evaluation], note: str = "") -> None:
        self.evaluation = evaluation
        self.history = list(history)
        self.note = note
        self._redraw()

    def show_swaps(self, swaps: Sequence[tuple[int, int, str]]) -> None:
        """Adapter swaps to mark on the trend: (turn index, side, label)."""
        if list(swaps) != self.swaps:
            self.swaps = list(swaps)
            self._redraw()

    def _redraw(self) -> None:
        parts: list = [evaluation_title(self.evaluation)]
        if self.note:
            parts.append(Text(self.note, style="dim"))
        parts.append(score_table(self.evaluation, self.names, self.dimensions))
        parts.extend(failures(self.evaluation, self.names))
        parts.append(Text(f"overall per evaluation ({len(self.history)} so far)", style="dim"))
        parts.extend(trend_lines(self.history, self.names, self.dimensions, self.swaps))
        self.update(Group(*parts))


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
) -> Table:
    """Scores after one turn beside the official ones: one row per dimension, four columns."""
    table = Table(box=None, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("dimension", no_wrap=True)
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
            dim.name,
            f"{dim.low}..{dim.high}",
            *(cell(e, side, dim.name) for e in (provisional, terminal) for side in (0, 1)),
        )
    table.add_row(
        Text("overall", style="bold"),
        "mean",
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

    def show(
        self,
        provisional: Evaluation | None,
        terminal: Evaluation | None,
        history: Sequence[Evaluation],
    ) -> None:
        self.provisional = provisional
        self.terminal = terminal
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
            comparison_table(provisional, terminal, self.names, self.dimensions),
        ]
        parts.extend(failures(provisional, self.names))
        parts.extend(failures(terminal, self.names))
        parts.append(Text(f"overall per evaluation up to this turn ({len(history)})", style="dim"))
        parts.extend(trend_lines(history, self.names, self.dimensions))
        self.update(Group(*parts))
