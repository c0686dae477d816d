"""Create or edit a character: one field per profile part, each with its problems shown under
it as you type; relationships to other characters; export to a library folder.

Everything goes through the engine: `validate_character` as you type, `save_authored_character`
on ^s, `save_authored_relationship` for a new relationship, `export_character` on ^l. The screen
returns the id of the character it saved, or None when nothing was saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select, Static, TextArea

from sotopia_pi import paths
from sotopia_pi.library import (
    FieldError,
    RecordError,
    character_to_dict,
    export_character,
    save_authored_character,
    save_authored_relationship,
    validate_character,
)
from sotopia_pi.profiles import Character, Relationship, RelationshipLevel
from sotopia_pi.store import Store

from ..widgets.fkeys import FKeyBar
from .confirm import ConfirmScreen
from .prompt import PromptField, PromptScreen

# Validation needs an id; a new character gets its real one (made from the name) when saved.
DRAFT_ID = "new-character"
EXPORT_FOLDER = "library-export"


@dataclass(frozen=True)
class FormField:
    name: str  # the Character field
    label: str
    hint: str = ""
    kind: str = "text"  # text | long (a TextArea) | number | list (comma-separated)


FIELDS = (
    FormField("first_name", "First name"),
    FormField("last_name", "Last name"),
    FormField("age", "Age", "18..70", kind="number"),
    FormField("occupation", "Occupation", "e.g. ferry captain"),
    FormField("gender", "Gender", "e.g. Woman, Man, Nonbinary"),
    FormField("gender_pronoun", "Pronouns", "e.g. She/her"),
    FormField("public_info", "Public info", "what anyone could know about them", kind="long"),
    FormField("big_five", "Big five", "Openness to Experience - High; Conscientiousness - Low; ...", kind="long"),
    FormField("moral_values", "Moral values", "comma-separated, e.g. Care, Fairness", kind="list"),
    FormField("schwartz_personal_values", "Schwartz values", "comma-separated, e.g. Benevolence, Security", kind="list"),
    FormField("personality_and_values", "Personality, values", "how they think and what they care about", kind="long"),
    FormField("decision_making_style", "Decision making", "e.g. Cautious, rule-bound"),
    FormField("secret", "Secret", "something they hide; the judge checks it is kept", kind="long"),
    FormField("mbti", "MBTI", "e.g. ISTJ"),
)
FIELD_NAMES = {field.name for field in FIELDS}


def field_text(field: FormField, value: Any) -> str:
    if field.kind == "list":
        return ", ".join(value or [])
    if field.kind == "number":
        return str(value) if value else ""
    return value or ""


def field_value(field: FormField, text: str) -> Any:
    """What the form holds for one field, as the Character record wants it. A number that is
    not one is passed on as typed, so that validation names the field."""
    if field.kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if field.kind == "number":
        stripped = text.strip()
        return int(stripped) if stripped.isdigit() else stripped
    return text.strip()


def errors_by_field(errors: list[FieldError]) -> tuple[dict[str, list[str]], list[str]]:
    """Messages per form field ('moral_values.0' shows under moral_values), and the rest."""
    shown: dict[str, list[str]] = {}
    other: list[str] = []
    for error in errors:
        name = (error.field or "").split(".")[0]
        if name in FIELD_NAMES:
            shown.setdefault(name, []).append(error.message)
        else:
            other.append(str(error))
    return shown, other


def relationship_line(relationship: Relationship, me: str, names: dict[str, str]) -> Text:
    other = relationship.agent2_id if relationship.agent1_id == me else relationship.agent1_id
    level = RelationshipLevel(relationship.relationship)
    text = Text()
    text.append(level.name.replace("_", " "), style="bold")
    text.append(f" with {names.get(other, other)}", style="bold")
    text.append(f" ({other})\n", style="dim")
    text.append(f"  {relationship.background_story or '(no background story)'}")
    return text


class CharacterEditorScreen(Screen[str | None]):
    """Returns the id of the character saved here, or None when nothing was saved."""

    SUB_TITLE = "Library — character"
    DEFAULT_CSS = """
    #char-head {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    #char-summary {
        height: auto;
    }
    #char-form {
        height: 1fr;
        padding: 0 1;
    }
    .char-row {
        height: auto;
        margin-top: 1;
    }
    .char-label {
        width: 20;
        text-style: bold;
    }
    .char-field {
        width: 1fr;
        height: auto;
    }
    .char-field TextArea {
        height: 3;
    }
    .field-error {
        height: auto;
        color: $error;
    }
    #relation-list {
        height: auto;
        padding: 0 1;
    }
    #relation-inputs {
        height: auto;
    }
    #relation-inputs Select {
        width: 1fr;
    }
    #relation-add {
        margin-top: 1;
    }
    #relation-note {
        color: $text-muted;
        height: auto;
    }
    #relation-error {
        height: auto;
        color: $error;
    }
    """
    BINDINGS = [
        Binding("ctrl+s", "save", "Save character", priority=True),
        Binding("ctrl+l", "export", "Export to a library folder", priority=True),
        Binding("escape", "close", "Back; asks before dropping changes"),
    ]

    def __init__(self, store: Store, character_id: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.character_id = character_id
        self.saved_id: str | None = None
        self.original: dict[str, Any] = character_to_dict(store.character(character_id)) if character_id else {}
        self.touched: set[str] = set()
        self.show_all = character_id is not None  # a new form shows a field's problems once it is typed in
        self.errors: list[FieldError] = []

    # -- building ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        with Vertical(id="char-head"):
            yield Static(self.title_text(), id="char-title")
            yield Static(id="char-summary")
        with VerticalScroll(id="char-form"):
            for field in FIELDS:
                with Horizontal(classes="char-row"):
                    yield Label(field.label, classes="char-label")
                    with Vertical(classes="char-field"):
                        text = field_text(field, self.original.get(field.name))
                        if field.kind == "long":
                            yield TextArea(text, id=f"char-{field.name}", placeholder=field.hint, compact=True)
                        else:
                            yield Input(text, placeholder=field.hint, id=f"char-{field.name}", compact=True, select_on_focus=False)
                        yield Static(id=f"char-{field.name}-error", classes="field-error")
            yield Label("Relationships", classes="section")
            yield Static(id="relation-list")
            yield Static(id="relation-note")
            with Horizontal(id="relation-inputs"):
                yield Select([], prompt="Other character", id="relation-other")
                yield Select(
                    [(f"{int(level)} {level.name.replace('_', ' ')}", level.name) for level in RelationshipLevel],
                    prompt="Level",
                    id="relation-level",
                )
            yield Input(placeholder="How they know each other (background story)", id="relation-story", compact=True)
            yield Button("Add relationship", id="relation-add")
            yield Static(id="relation-error")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.check()
        self.show_relationships()
        self.query_one(f"#char-{FIELDS[0].name}").focus()

    def title_text(self) -> Text:
        text = Text()
        if self.character_id:
            name = f"{self.original.get('first_name', '')} {self.original.get('last_name', '')}".strip()
            text.append(f"Character {name} ", style="bold")
            text.append(f"({self.character_id})", style="dim")
        else:
            text.append("New character ", style="bold")
            text.append("(its id is made from the name when first saved)", style="dim")
        text.append("\n^s saves · ^l exports to a library folder · Esc goes back", style="dim")
        return text

    # -- the form ---------------------------------------------------------------------------

    def field_texts(self) -> dict[str, str]:
        texts = {}
        for field in FIELDS:
            widget = self.query_one(f"#char-{field.name}")
            texts[field.name] = widget.text if isinstance(widget, TextArea) else widget.value
        return texts

    def data(self) -> dict[str, Any]:
        """The character as typed, over the stored record (so fields not on the form, like
        `tag`, are kept)."""
        record = dict(self.original)
        texts = self.field_texts()
        for field in FIELDS:
            if texts[field.name] == field_text(field, self.original.get(field.name)):
                continue  # untouched: keep the stored value exactly
            value = field_value(field, texts[field.name])
            if value in ("", []):
                record.pop(field.name, None)
            else:
                record[field.name] = value
        return record

    def unsaved(self) -> bool:
        return self.data() != self.original

    @on(Input.Changed, ".char-field Input")
    @on(TextArea.Changed, ".char-field TextArea")
    def _field_changed(self, event: Input.Changed | TextArea.Changed) -> None:
        widget = event.input if isinstance(event, Input.Changed) else event.text_area
        name = (widget.id or "").removeprefix("char-")
        field = next(f for f in FIELDS if f.name == name)
        if self.field_texts()[name] != field_text(field, self.original.get(name)):
            self.touched.add(name)
        self.check()

    def check(self) -> list[FieldError]:
        """Validate what is typed and show each problem under its field."""
        # the id is not typed here: a stored one is kept whatever its form, a new one is made
        self.errors = validate_character({**self.data(), "id": DRAFT_ID})
        shown, other = errors_by_field(self.errors)
        for field in FIELDS:
            line = self.query_one(f"#char-{field.name}-error", Static)
            visible = self.show_all or field.name in self.touched
            messages = shown.get(field.name, []) if visible else []
            line.update("\n".join(f"✗ {message}" for message in messages))
            line.display = bool(messages)
        self.query_one("#char-summary", Static).update(self.summary_text(other))
        return self.errors

    def summary_text(self, other: list[str]) -> Text:
        count = len(self.errors)
        text = Text()
        if count:
            text.append(f"{count} problem{'s' if count != 1 else ''}", style="bold red")
            if not self.show_all:
                text.append(" (fields you have not filled in count too)", style="dim")
        else:
            text.append("ready to save", style="bold green")
        if self.unsaved():
            text.append(" · unsaved changes", style="yellow")
        for message in other:
            text.append(f"\n✗ {message}", style="red")
        return text

    # -- saving -----------------------------------------------------------------------------

    def action_save(self) -> None:
        data = self.data()
        if self.character_id:
            data["id"] = self.character_id
        try:
            character = save_authored_character(self.store, data)
        except RecordError as error:
            self.show_all = True
            self.check()
            count = len(error.errors)
            self.notify(
                f"Not saved: {count} problem{'s' if count != 1 else ''}, shown under the fields.",
                severity="error",
            )
            return
        self.saved(character)
        self.notify(f"Saved {character.name} ({character.id}).")

    def saved(self, character: Character) -> None:
        self.character_id = self.saved_id = character.id
        self.original = character_to_dict(character)
        self.touched.clear()
        self.show_all = True
        self.query_one("#char-title", Static).update(self.title_text())
        self.check()
        self.show_relationships()

    def action_close(self) -> None:
        if not self.unsaved():
            self.dismiss(self.saved_id)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(self.saved_id)

        self.app.push_screen(
            ConfirmScreen("This character has unsaved changes. Leave and drop them?", yes="Drop changes", no="Keep editing"),
            answered,
        )

    # -- relationships ----------------------------------------------------------------------

    def show_relationships(self) -> None:
        me = self.character_id
        others = [c for c in self.store.characters() if c.id != me]
        names = {c.id: c.name for c in others}
        related = [r for r in self.store.relationships() if me in (r.agent1_id, r.agent2_id)] if me else []
        listing = Text()
        for index, relationship in enumerate(related):
            listing.append_text(relationship_line(relationship, me or "", names))
            if index + 1 < len(related):
                listing.append("\n")
        self.query_one("#relation-list", Static).update(listing if related else Text("None yet.", style="dim"))
        note = (
            "Scenarios need a relationship at their level between the two characters: add one per partner."
            if me
            else "Save the character (^s) first; then you can give it relationships."
        )
        self.query_one("#relation-note", Static).update(note)
        other_select = self.query_one("#relation-other", Select)
        chosen = other_select.value
        other_select.set_options([(f"{c.name} ({c.id})", c.id) for c in others])
        if chosen in names:
            other_select.value = chosen
        for selector in ("#relation-other", "#relation-level", "#relation-story", "#relation-add"):
            self.query_one(selector).disabled = me is None

    @on(Button.Pressed, "#relation-add")
    def add_relationship(self) -> None:
        if self.character_id is None:
            return
        other = self.query_one("#relation-other", Select)
        level = self.query_one("#relation-level", Select)
        record: dict[str, Any] = {
            "agent1_id": self.character_id,
            "agent2_id": None if other.is_blank() else other.value,
            "background_story": self.query_one("#relation-story", Input).value.strip(),
        }
        if not level.is_blank():
            record["relationship"] = level.value
        error_line = self.query_one("#relation-error", Static)
        try:
            relationship = save_authored_relationship(self.store, record)
        except RecordError as error:
            labels = {"agent2_id": "other character", "relationship": "level", "background_story": "background story"}
            error_line.update("\n".join(f"✗ {labels.get(e.field or '', e.field or 'relationship')}: {e.message}" for e in error.errors))
            return
        error_line.update("")
        self.query_one("#relation-story", Input).value = ""
        self.show_relationships()
        partner = relationship.agent2_id if relationship.agent1_id == self.character_id else relationship.agent1_id
        level = RelationshipLevel(relationship.relationship).name.replace("_", " ")
        self.notify(f"Relationship saved: {level} with {partner}.")

    # -- export -----------------------------------------------------------------------------

    def action_export(self) -> None:
        if self.character_id is None or self.unsaved():
            self.notify("Save the character first (^s): the export writes what is stored.", severity="warning")
            return
        character_id = self.character_id

        def export(answer: dict[str, str]) -> str | None:
            folder = answer["folder"].strip()
            if not folder:
                return "folder: give a folder to write characters.toml into"
            try:
                written = export_character(self.store, character_id, Path(folder).expanduser())
            except (RecordError, ValueError, OSError) as error:
                return f"Not exported: {error}"
            self.notify("Wrote " + ", ".join(str(path) for path in written), title="Exported", timeout=10)
            return None

        self.app.push_screen(
            PromptScreen(
                "Export to a library folder",
                [PromptField("folder", "Folder", value=str(paths.home() / EXPORT_FOLDER))],
                explanation="Writes the character into characters.toml and its relationships into "
                "relationships.toml there, replacing its earlier export; the rest of each file is kept.",
                accept=export,
            )
        )
