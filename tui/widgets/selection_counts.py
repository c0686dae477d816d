"""What the current curation selection would produce: sides, examples and tokens, in total,
per side and per scenario."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from sotopia_pi.dataset.examples import Counts, SelectionStats

TOKEN_NOTE = "≈ 4 characters a token"


def counts_table(title: str, rows: list[tuple[str, Counts]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False, expand=True)
    table.add_column("", no_wrap=True, ratio=3)
    for label in ("sides", "examples", "≈ tokens"):
        table.add_column(label, justify="right", no_wrap=True, ratio=1)
    for label, counts in rows:
        table.add_row(label, str(counts.sides), str(counts.examples), f"{counts.tokens:,}")
    return table


def summary_text(stats: SelectionStats | None, counting: bool) -> Text:
    if stats is None:
        return Text("Counting what this selection would train on…", style="dim italic")
    total = stats.total
    text = Text()
    text.append("Would train on ", style="bold")
    text.append(f"{total.examples} examples · ≈ {total.tokens:,} tokens", style="bold green")
    text.append(f"\nfrom {total.sides} sides of {stats.episodes} episodes ")
    text.append("(recounting…)" if counting else f"({TOKEN_NOTE})", style="yellow" if counting else "dim")
    return text


class SelectionCounts(Horizontal):
    DEFAULT_CSS = """
    SelectionCounts {
        height: 9;
        border-top: solid $primary;
    }
    #counts-left {
        width: 60;
        padding: 0 1;
    }
    #counts-scenarios {
        width: 1fr;
        padding: 0 1;
    }
    #counts-per-scenario {
        height: auto;
    }
    SelectionCounts.stale #counts-per-side, SelectionCounts.stale #counts-per-scenario {
        color: $text-muted;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stats: SelectionStats | None = None
        self.counting = True

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="counts-left"):
            yield Static(summary_text(None, True), id="counts-summary")
            yield Static(id="counts-per-side")
        with VerticalScroll(id="counts-scenarios"):
            yield Static(id="counts-per-scenario")

    def start_counting(self) -> None:
        self.counting = True
        self.add_class("stale")
        self.query_one("#counts-summary", Static).update(summary_text(self.stats, True))

    def show(self, stats: SelectionStats) -> None:
        self.stats = stats
        self.counting = False
        self.remove_class("stale")
        self.query_one("#counts-summary", Static).update(summary_text(stats, False))
        sides = [(f"side {int(side) + 1}", counts) for side, counts in sorted(stats.per_side.items())]
        self.query_one("#counts-per-side", Static).update(counts_table("Per side", sides))
        scenarios = sorted(stats.per_scenario.items())
        self.query_one("#counts-per-scenario", Static).update(
            counts_table("Per scenario", scenarios) if scenarios else Text("Per scenario: nothing selected", style="dim")
        )
