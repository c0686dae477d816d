"""Export a dataset snapshot from the TUI: pick the snapshot and a format, edit the path if
you like, Enter writes it (in a thread) and the dialog shows where, and how many rows."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from sotopia_pi import paths
from sotopia_pi.dataset.export import EPISODE_FORMATS, ExportFormat, ExportReport, write_export
from sotopia_pi.dataset.snapshots import SnapshotManifest, load_snapshot
from sotopia_pi.store import Store

from ..errors import describe

FORMAT_LABELS = {
    ExportFormat.sft: "sft: prompt and answer per turn (TRL SFT)",
    ExportFormat.chat: "chat: messages per turn (chat templates)",
    ExportFormat.prompt_completion: "prompt-completion: two strings per turn",
    ExportFormat.episodelog: "episodelog: SOTOPIA's EpisodeLog, one episode a line",
    ExportFormat.sotopia_episodes: "sotopia-episodes: SOTOPIA-pi's episode rows",
}


def default_path(snapshot: str, fmt: ExportFormat) -> Path:
    return paths.home() / "exports" / f"{snapshot}.{fmt.value}.jsonl"


def report_text(report: ExportReport) -> Text:
    unit = "episodes" if report.format in EPISODE_FORMATS else "examples"
    text = Text.assemble(("Written: ", "bold green"), f"{report.rows} {unit} to\n", (report.path, "bold"))
    if report.truncated_examples:
        text.append(f"\n{report.truncated_examples} prompt(s) were cut ({report.dropped_history_lines} oldest lines dropped).")
    return text


class ExportScreen(ModalScreen[ExportReport | None]):
    DEFAULT_CSS = """
    ExportScreen {
        align: center middle;
    }
    #export-box {
        width: 90;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #export-snapshots {
        height: auto;
        max-height: 8;
    }
    #export-box Select, #export-box Input {
        width: 1fr;
    }
    #export-result {
        height: auto;
        margin-top: 1;
    }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+e", "export", "Export"),
    ]

    def __init__(self, store: Store, snapshots: list[SnapshotManifest], chosen: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.snapshots = snapshots
        self.chosen = chosen if chosen in {m.name for m in snapshots} else (snapshots[-1].name if snapshots else None)
        self.report: ExportReport | None = None
        self._path_edited = False

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label("Export a snapshot as training data (JSONL)", classes="section")
            yield OptionList(
                *(Option(f"{m.name}  · {m.examples} examples · {m.created_at[:10]}", id=m.name) for m in self.snapshots),
                id="export-snapshots",
            )
            yield Select(
                [(label, fmt.value) for fmt, label in FORMAT_LABELS.items()],
                value=ExportFormat.sft.value,
                allow_blank=False,
                id="export-format",
            )
            yield Input(id="export-path", placeholder="the file to write")
            yield Static(Text("Enter or ^e writes the file; Esc closes.", style="dim"), id="export-result")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = [m.name for m in self.snapshots]
        if self.chosen is not None:
            options.highlighted = names.index(self.chosen)
        self._suggest_path()
        options.focus()

    @property
    def format(self) -> ExportFormat:
        return ExportFormat(str(self.query_one("#export-format", Select).value))

    def _suggest_path(self) -> None:
        if self.chosen is not None and not self._path_edited:
            box = self.query_one("#export-path", Input)
            box.value = str(default_path(self.chosen, self.format))
            self._path_edited = False

    @on(OptionList.OptionHighlighted, "#export-snapshots")
    def _snapshot_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.chosen = event.option.id
        self._suggest_path()

    @on(OptionList.OptionSelected, "#export-snapshots")
    @on(Input.Submitted, "#export-path")
    def _enter(self) -> None:
        self.action_export()

    @on(Select.Changed, "#export-format")
    def _format_changed(self) -> None:
        self._suggest_path()

    @on(Input.Changed, "#export-path")
    def _path_changed(self, event: Input.Changed) -> None:
        if self.chosen is not None and event.value != str(default_path(self.chosen, self.format)):
            self._path_edited = True

    def action_export(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        if self.chosen is None:
            self._say(Text("No snapshot to export: make one in Curation (n).", style="red"))
            return
        if not path:
            self._say(Text("Say where to write the file.", style="red"))
            return
        self._say(Text(f"Writing {self.chosen} as {self.format.value}…", style="dim"))
        self._export(self.chosen, self.format, Path(path).expanduser())

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, name: str, fmt: ExportFormat, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            report = write_export(load_snapshot(self.store, name), fmt, path)
        except Exception as error:  # a full disk, a folder in the way, a snapshot gone: said
            self.app.call_from_thread(self._say, Text(f"Not written: {describe(error)}", style="red"))
            return
        self.app.call_from_thread(self._written, report)

    def _written(self, report: ExportReport) -> None:
        self.report = report
        self._say(report_text(report))
        self.notify(f"Wrote {report.rows} rows to {report.path}", timeout=10)

    def _say(self, text: Text) -> None:
        self.query_one("#export-result", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(self.report)
