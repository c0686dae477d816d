"""Manual curation: which judged episode sides become training data.

A table of candidate sides (the engine's curation.preview), a bar of composable filters, the
counts the selection would produce, keep/reject/tag keys, a turn editor and snapshots. All
the deciding is done by the sotopia_pi.dataset package; this screen shows and asks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from sotopia_pi.dataset.annotations import clear_decision, curator_tags, decision_map, set_decision, set_tags
from sotopia_pi.dataset.candidates import Candidate, episode_candidates, load_candidates
from sotopia_pi.dataset.errors import CurationError
from sotopia_pi.dataset.examples import SelectionStats
from sotopia_pi.dataset.filters import Filter, parse_filter
from sotopia_pi.dataset.selection import Preview, PreviewRow, SelectionCounter, preview
from sotopia_pi.dataset.snapshots import check_name, create_snapshot, list_snapshots, snapshot_exists
from sotopia_pi.store import NotFound, Store

from ..errors import describe
from ..players import PERSON, played_by
from ..widgets.filter_bar import ActiveFilters, FilterBar
from ..widgets.fkeys import FKeyBar
from ..widgets.selection_counts import SelectionCounts
from .export import ExportScreen
from .prompt import PromptField, PromptScreen
from .turn_editor import TurnEditorScreen

STATE_STYLES = {
    "selected": "green",
    "kept by hand": "bold green",
    "rejected": "red",
    "filtered out": "dim",
}


def row_key(candidate: Candidate) -> str:
    return f"{candidate.episode_id}:{candidate.side}"


@lru_cache(maxsize=1024)
def short_model(name: str) -> str:
    """gguf:/models/big/qwen.gguf+adapter=/runs/a1 -> gguf:qwen.gguf+a1 (the details line has the full name)."""
    base, _, adapter = name.partition("+adapter=")  # a stored name, shortened for a column
    kind, colon, rest = base.partition(":")
    if colon and "/" in rest:
        rest = rest.split("@")[0].rstrip("/").rsplit("/", 1)[-1] + ("@…" if "@" in rest else "")
        base = f"{kind}:{rest}"
    if adapter:
        base += "+" + adapter.rstrip("/").rsplit("/", 1)[-1]
    return base


def score_cell(candidate: Candidate, value: float | None) -> Text:
    if candidate.judge_failure is not None:
        failed = candidate.judge_failure != "no terminal evaluation"
        return Text("fail" if failed else "-", style="dim red" if failed else "dim", justify="right")
    return Text("-" if value is None else f"{value:.2f}".rstrip("0").rstrip("."), justify="right")


def score_sort(value: float | None) -> float:
    return -math.inf if value is None else value


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort: Callable[[TableRow], object]
    width: int | None = None
    descending_first: bool = False


@dataclass(frozen=True)
class TableRow:
    row: PreviewRow
    partner_model: str
    decision_scope: str  # "side", "episode" or ""

    @property
    def candidate(self) -> Candidate:
        return self.row.candidate

    @cached_property
    def key(self) -> str:
        return row_key(self.candidate)

    def signature(self) -> tuple:
        """What the cells depend on besides the candidate (a changed candidate is a new object)."""
        return (self.row.state, self.decision_scope)

    def cells(self) -> tuple:
        c = self.candidate
        decision = c.decision or ""
        if decision and self.decision_scope == "episode":
            decision += " (ep)"
        return (
            Text(self.row.state, style=STATE_STYLES[self.row.state]),
            c.episode_id[-8:],
            c.scenario_id,
            str(c.side + 1),
            played_by(c.model, c.by_human, not c.by_human, short_model),
            self.partner_model if self.partner_model == PERSON else short_model(self.partner_model),
            score_cell(c, c.score("goal")),
            score_cell(c, c.overall),
            Text(decision, style="red" if c.decision == "reject" else "green"),
            ", ".join(c.tags),
        )


COLUMNS = (
    Column("status", "status", lambda r: r.row.state, 12),
    Column("episode", "episode", lambda r: (r.candidate.created_at, r.candidate.episode_id), 8),
    Column("scenario", "scenario", lambda r: r.candidate.scenario_id, 12),
    Column("side", "side", lambda r: r.candidate.side, 4),
    Column("model", "played by", lambda r: played_by(r.candidate.model, r.candidate.by_human, not r.candidate.by_human), 16),
    Column("partner", "vs", lambda r: r.partner_model, 16),
    Column("goal", "goal", lambda r: score_sort(r.candidate.score("goal")), 5, descending_first=True),
    Column("overall", "overall", lambda r: score_sort(r.candidate.overall), 7, descending_first=True),
    Column("decision", "decision", lambda r: r.candidate.decision or "", 11),
    Column("tags", "tags", lambda r: ", ".join(r.candidate.tags)),
)
COLUMN_BY_KEY = {column.key: column for column in COLUMNS}


def details_text(row: TableRow | None) -> Text:
    if row is None:
        return Text("No side to show.", style="dim")
    c = row.candidate
    text = Text()
    text.append(f"episode {c.episode_id} · side {c.side + 1} · {c.scenario_id} · {c.created_at[:19].replace('T', ' ')}\n")
    player = f"played by a person (the side was set to {c.model})" if c.by_human else f"model {c.model}"
    text.append(f"{player}  vs  {row.partner_model}", style="dim")
    text.append(f" · {c.examples} training turns", style="dim")
    if c.tags:
        text.append(f" · tags: {', '.join(c.tags)}", style="dim")
    if c.decision:
        scope = "on the whole episode" if row.decision_scope == "episode" else "on this side"
        text.append(f" · {c.decision} {scope}", style="green" if c.decision == "keep" else "red")
    if c.judge_failure is not None:
        text.append(f"\nnot scored: {c.judge_failure}", style="red")
    return text


class CurationScreen(Screen):
    SUB_TITLE = "Curation — choose the training data"
    DEFAULT_CSS = """
    #curation-status {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    #curation-table {
        height: 1fr;
    }
    #curation-details {
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $boost;
    }
    """
    BINDINGS = [
        Binding("slash", "filter", "Add filter"),
        Binding("k", "decide('keep', 'side')", "Keep side"),
        Binding("r", "decide('reject', 'side')", "Reject side"),
        Binding("K", "decide('keep', 'episode')", "Keep whole episode", show=False),
        Binding("R", "decide('reject', 'episode')", "Reject whole episode", show=False),
        Binding("u", "undecide", "Undo decision"),
        Binding("t", "tag", "Tag"),
        Binding("e", "edit", "Edit turns"),
        Binding("n", "snapshot", "Snapshot"),
        Binding("x", "export", "Export"),
        Binding("s", "sort_next", "Sort"),
        Binding("a", "toggle_all", "Show all/matching", show=False),
        Binding("ctrl+l", "clear_filters", "Clear filters", show=False),
        Binding("ctrl+u", "reload", "Reload", show=False),
        Binding("escape", "focus_table", "Back to the table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.candidates: list[Candidate] = []
        self.specs: list[str] = []
        self.filters: list[Filter] = []
        self.view: Preview | None = None
        self.rows: list[TableRow] = []
        self.show_all = False
        self.sort_key: str | None = None
        self.sort_descending = False
        self.loading = True
        self.stats: SelectionStats | None = None
        self.count_generation = 0
        self.decisions: dict[tuple[str, int | None], str] = {}
        self._cells: dict[str, tuple] = {}
        self._cell_cache: dict[str, tuple] = {}
        self._row_by_key: dict[str, TableRow] = {}
        self._child_open = False

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        yield FilterBar(id="filter-bar")
        yield Static("Loading episodes…", id="curation-status")
        yield DataTable(id="curation-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="curation-details")
        yield SelectionCounts(id="selection-counts")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.counter = SelectionCounter(self.store)
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        """Shown for the first time, or again: read the store afresh (episodes may have been
        played meanwhile), unless we come back from our own dialog, which refreshed what it changed."""
        if self._child_open:
            self._child_open = False
            return
        self.load()

    def open_child(self, screen, callback=None) -> None:
        self._child_open = True
        self.app.push_screen(screen, callback)

    # -- loading and counting (workers) ---------------------------------------------------

    def load(self) -> None:
        self.loading = True
        self.query_one("#curation-status", Static).update("Loading episodes…")
        self._load_candidates()

    @work(thread=True, exclusive=True, group="curation-load", exit_on_error=False)
    def _load_candidates(self) -> None:
        worker = get_current_worker()
        try:
            candidates = load_candidates(self.store)
            decisions = decision_map(self.store)
        except Exception as error:  # a broken record: say so, keep the screen usable
            self.app.call_from_thread(self.notify, f"Cannot load episodes: {error}", severity="error", timeout=15)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._loaded, candidates, decisions)

    def _loaded(self, candidates: list[Candidate], decisions: dict[tuple[str, int | None], str]) -> None:
        self.candidates = candidates
        self.decisions = decisions
        self.loading = False
        self.refresh_view()

    def recount(self) -> None:
        if self.view is None:
            return
        self.count_generation += 1
        self.query_one(SelectionCounts).start_counting()
        self._count(list(self.view.selection.kept), self.count_generation)

    @property
    def counting(self) -> bool:
        return self.query_one(SelectionCounts).counting

    @work(thread=True, exclusive=True, group="curation-count", exit_on_error=False)
    def _count(self, kept: list, generation: int) -> None:
        worker = get_current_worker()
        try:
            stats = self.counter.count(kept, cancelled=lambda: worker.is_cancelled)
        except Exception as error:
            self.app.call_from_thread(self.notify, f"Cannot count the selection: {error}", severity="error")
            return
        if stats is not None and not worker.is_cancelled:
            self.app.call_from_thread(self._counted, stats, generation)

    def _counted(self, stats: SelectionStats, generation: int) -> None:
        if generation != self.count_generation:
            return  # a newer selection is being counted
        self.stats = stats
        self.query_one(SelectionCounts).show(stats)

    # -- the table ------------------------------------------------------------------------

    def make_view(self, filters: list[Filter]) -> Preview:
        return preview(self.candidates, filters)

    def refresh_view(self, recount: bool = True) -> None:
        """Select again with the current filters and decisions, redraw, recount."""
        try:
            self.view = self.make_view(self.filters)
        except CurationError as error:
            self.notify(describe(error), severity="error", timeout=10)
            return
        models = {c.key: played_by(c.model, c.by_human, not c.by_human) for c in self.candidates}
        self.rows = [
            TableRow(
                row,
                models.get((row.candidate.episode_id, 1 - row.candidate.side), "?"),
                self.decision_scope(row.candidate),
            )
            for row in self.view.rows
            if row.matches or self.show_all
        ]
        if self.sort_key is not None:
            column = COLUMN_BY_KEY[self.sort_key]
            self.rows.sort(key=column.sort, reverse=self.sort_descending)
        self._row_by_key = {row.key: row for row in self.rows}
        self.draw_table()
        self.query_one(FilterBar).show(self.specs, self.view.selection)
        self.update_status()
        if recount:
            self.recount()

    def decision_scope(self, candidate: Candidate) -> str:
        if (candidate.episode_id, candidate.side) in self.decisions:
            return "side"
        return "episode" if (candidate.episode_id, None) in self.decisions else ""

    def column_label(self, column: Column) -> Text:
        if column.key != self.sort_key:
            return Text(column.label)
        return Text(f"{column.label} {'▼' if self.sort_descending else '▲'}", style="bold")

    def draw_table(self) -> None:
        table = self.query_one(DataTable)
        keys = [row.key for row in self.rows]
        if table.columns and keys == list(self._cells):
            self._update_changed_cells(table)
            return
        current = self.current_key()
        cursor_row = table.cursor_row
        table.clear(columns=True)
        for column in COLUMNS:
            table.add_column(self.column_label(column), key=column.key, width=column.width)
        self._cells = {row.key: self.cells_of(row) for row in self.rows}
        for key, cells in self._cells.items():
            table.add_row(*cells, key=key)
        if current in self._cells:
            table.move_cursor(row=table.get_row_index(current), animate=False)
        elif self.rows:
            table.move_cursor(row=min(cursor_row, len(self.rows) - 1), animate=False)
        self.show_details()

    def cells_of(self, row: TableRow) -> tuple:
        signature = row.signature()
        cached = self._cell_cache.get(row.key)
        if cached is not None and cached[0] == signature and cached[1] is row.candidate:
            return cached[2]
        cells = row.cells()
        self._cell_cache[row.key] = (signature, row.candidate, cells)
        return cells

    def _update_changed_cells(self, table: DataTable) -> None:
        for row in self.rows:
            cells = self.cells_of(row)
            old = self._cells[row.key]
            if cells is not old:
                for column, value, before in zip(COLUMNS, cells, old):
                    if value != before:
                        table.update_cell(row.key, column.key, value)
                self._cells[row.key] = cells
        self.show_details()

    def update_status(self) -> None:
        if self.view is None:
            return
        shown = len(self.rows)
        matching = sum(1 for row in self.view.rows if row.matches)
        kept = len(self.view.selection.kept)
        what = "all" if self.show_all else "matching"
        text = f"{kept} of {len(self.view.rows)} sides selected · {shown} {what} shown"
        if not self.show_all and matching != kept:
            text += f" ({matching - kept} rejected by hand)"
        if self.sort_key:
            text += f" · sorted by {COLUMN_BY_KEY[self.sort_key].label} {'▼' if self.sort_descending else '▲'}"
        hint = f" · a: show {'matching' if self.show_all else 'all'} · K/R: whole episode · ? keys"
        self.query_one("#curation-status", Static).update(text + hint)

    def current_key(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def current_row(self) -> TableRow | None:
        key = self.current_key()
        return self._row_by_key.get(key) if key is not None else None

    def show_details(self) -> None:
        self.query_one("#curation-details", Static).update(details_text(self.current_row()))

    @on(DataTable.RowHighlighted, "#curation-table")
    def _row_highlighted(self) -> None:
        self.show_details()

    @on(DataTable.RowSelected, "#curation-table")
    def _row_selected(self) -> None:
        self.action_edit()

    @on(DataTable.HeaderSelected, "#curation-table")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    def sort_by(self, key: str) -> None:
        column = COLUMN_BY_KEY[key]
        if self.sort_key == key:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_key, self.sort_descending = key, column.descending_first
        self.refresh_view(recount=False)

    def action_sort_next(self) -> None:
        """Step through the columns; on the last, go back to the episodes' own order."""
        keys = [column.key for column in COLUMNS]
        if self.sort_key is None:
            self.sort_by(keys[0])
        elif self.sort_key == keys[-1]:
            self.sort_key = None
            self.refresh_view(recount=False)
        else:
            self.sort_by(keys[keys.index(self.sort_key) + 1])

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.refresh_view(recount=False)

    def action_reload(self) -> None:
        self.load()

    # -- filters --------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter-input").focus()

    def action_focus_table(self) -> None:
        self.query_one(DataTable).focus()

    @on(FilterBar.AddRequested)
    def _add_filter(self, event: FilterBar.AddRequested) -> None:
        bar = self.query_one(FilterBar)
        try:
            added = parse_filter(event.spec)
            self.make_view([*self.filters, added])  # an unknown score name is refused here
        except CurationError as error:
            bar.show_error(str(error))
            return
        self.specs.append(event.spec)
        self.filters.append(added)
        bar.accepted()
        self.refresh_view()
        self.action_focus_table()

    @on(ActiveFilters.RemoveRequested)
    def _remove_filter(self, event: ActiveFilters.RemoveRequested) -> None:
        removed = self.specs.pop(event.index)
        del self.filters[event.index]
        self.notify(f"Removed the filter {removed}")
        self.refresh_view()
        if not self.filters:
            self.query_one(DataTable).focus()

    def action_clear_filters(self) -> None:
        self.specs.clear()
        self.filters.clear()
        self.refresh_view()

    # -- decisions and tags ---------------------------------------------------------------

    def refresh_episode(self, episode_id: str) -> None:
        """Re-read one episode's two sides after a decision or a tag changed them."""
        try:
            fresh = {c.key: c for c in episode_candidates(self.store, episode_id)}
        except CurationError:  # deleted or changed meanwhile (the CLI shares the store): read everything
            self.load()
            return
        self.candidates = [fresh.get(c.key, c) for c in self.candidates]
        self.decisions = decision_map(self.store)
        self.refresh_view()

    def action_decide(self, decision: str, scope: str) -> None:
        row = self.current_row()
        if row is None:
            return
        c = row.candidate
        side = c.side if scope == "side" else None
        try:
            set_decision(self.store, c.episode_id, decision, side=side)  # type: ignore[arg-type]
        except CurationError as error:
            self.notify(describe(error), severity="error")
            return
        self.refresh_episode(c.episode_id)
        target = f"side {c.side + 1}" if side is not None else "both sides"
        self.notify(f"{decision.capitalize()}: {target} of episode {c.episode_id[-8:]}")

    def action_undecide(self) -> None:
        """Clear the side's own decision; if it has none, the whole episode's."""
        row = self.current_row()
        if row is None:
            return
        c = row.candidate
        if clear_decision(self.store, c.episode_id, c.side):
            message = f"Decision on side {c.side + 1} cleared"
        elif clear_decision(self.store, c.episode_id, None):
            message = "Decision on the whole episode cleared"
        else:
            self.notify("No decision to undo on this side.")
            return
        self.refresh_episode(c.episode_id)
        self.notify(message)

    def action_tag(self) -> None:
        row = self.current_row()
        if row is None:
            return
        episode_id = row.candidate.episode_id
        current = curator_tags(self.store).get(episode_id, [])

        def save(values: dict[str, str]) -> str | None:
            tags = [tag.strip() for tag in values["tags"].split(",") if tag.strip()]
            try:
                set_tags(self.store, episode_id, tags)
            except CurationError as error:
                return str(error)
            return None

        self.open_child(
            PromptScreen(
                f"Curator tags of episode {episode_id[-8:]}",
                [PromptField("tags", "Tags, separated by commas (an empty box removes them all)", "gold, polite", ", ".join(current))],
                explanation="Tags belong to the whole episode; the filter tag:NAME selects by them. "
                "Tags the runner gave the episode stay as they are.",
                accept=save,
            ),
            lambda answer: self.refresh_episode(episode_id) if answer is not None else None,
        )

    # -- turn editor ----------------------------------------------------------------------

    def action_edit(self) -> None:
        row = self.current_row()
        if row is None:
            return
        try:
            editor = TurnEditorScreen(self.store, row.candidate.episode_id, row.candidate.side)
        except NotFound as error:
            self.notify(f"{error}; ^u reloads the list.", severity="error")
            return
        self.open_child(editor, lambda changed: self.recount() if changed else None)

    # -- snapshots ------------------------------------------------------------------------

    def action_snapshot(self) -> None:
        if self.view is None or not self.view.selection.kept:
            self.notify("The selection is empty; nothing to snapshot.", severity="warning")
            return

        def check(values: dict[str, str]) -> str | None:
            name = values["name"].strip()
            try:
                check_name(name)
            except CurationError as error:
                return str(error)
            if snapshot_exists(self.store, name):
                return f"A snapshot named {name!r} already exists, and snapshots are never overwritten: pick another name."
            return None

        kept = len(self.view.selection.kept)
        self.open_child(
            PromptScreen(
                "Make a dataset snapshot",
                [
                    PromptField("name", "Name (letters, digits, . _ -)", "round-1-best-side"),
                    PromptField("description", "Description (optional)", "what this data is for"),
                ],
                explanation=f"Freezes the {kept} selected sides as they are now (filters, decisions, edits); "
                "later changes never alter a snapshot. Training and export read snapshots.",
                accept=check,
            ),
            self._snapshot_named,
        )

    def action_export(self, chosen: str | None = None) -> None:
        """The export dialog: a snapshot (the newest, or `chosen`), a format, a path."""
        try:
            snapshots = list_snapshots(self.store)
        except Exception as error:  # a manifest that no longer validates
            self.notify(describe(error), title="Cannot read the snapshots", severity="error")
            return
        if not snapshots:
            self.notify("No snapshot yet: n makes one from the selection, then x exports it.", severity="warning")
            return
        self.open_child(ExportScreen(self.store, snapshots, chosen))

    def _snapshot_named(self, answer: dict[str, str] | None) -> None:
        if answer is not None:
            self.notify(f"Making the snapshot {answer['name'].strip()}…")
            self._make_snapshot(answer["name"].strip(), answer["description"].strip(), list(self.filters))

    @work(thread=True, exclusive=True, group="curation-snapshot", exit_on_error=False)
    def _make_snapshot(self, name: str, description: str, filters: list[Filter]) -> None:
        try:
            snapshot = create_snapshot(self.store, name, filters, description=description)
        except CurationError as error:
            self.app.call_from_thread(self.notify, describe(error), title="No snapshot made", severity="error", timeout=15)
            return
        manifest = snapshot.manifest
        self.app.call_from_thread(
            self.notify,
            f"Snapshot {manifest.name} saved: {manifest.examples} examples from {len(manifest.sides)} sides "
            f"(digest {manifest.digest[:12]}). x exports it.",
            timeout=15,
        )
