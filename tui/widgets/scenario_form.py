"""An editable scenario: one field per part, each with its problems shown under it as you type.

The form knows nothing of saving: it turns what is typed into a library-format dict (`data`),
checks it with the engine's `validate_scenario` plus an optional extra check (a duplicate, a
taken codename), and counts the character pairs that could play it. The authoring and the
generation screens put it to their own use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, TextArea
from textual.widgets.select import InvalidSelectValueError

from sotopia_pi.library import CATEGORIES, FieldError, scenario_from_dict, scenario_to_dict, validate_scenario
from sotopia_pi.profiles import Character, Relationship, RelationshipLevel, Scenario, valid_pairs

ExtraCheck = Callable[[Scenario], list[FieldError]]

# Which error line shows a problem, by the first part of its field name.
_ERROR_LINE = {
    "codename": "codename",
    "category": "category",
    "relationship": "relationship",
    "scenario": "scenario",
    "agent_goals": "goal-1",
    "age_constraint": "ages",
    "occupation_constraint": "occupations",
    "agent_constraint": "agents",
}
_ERROR_LINES = ("codename", "category", "relationship", "scenario", "goal-0", "goal-1", "ages", "occupations", "agents", "record")
_AGE_RANGE = re.compile(r"^\s*(\d+)\s*(?:-|\.\.|to)\s*(\d+)\s*$")


# -- text <-> constraint values (pure) -------------------------------------------------------


def _two_sides(text: str, what: str) -> list[str] | None:
    if not text.strip():
        return None
    sides = text.split(";")
    if len(sides) != 2:
        raise ValueError(f"write the {what} for side 1, a ';', then side 2")
    return sides


def parse_age_constraint(text: str) -> list[list[int]] | None:
    """'20-40; 30-70' -> [[20, 40], [30, 70]]; blank -> None (any age)."""
    sides = _two_sides(text, "age range")
    if sides is None:
        return None
    ranges = []
    for side in sides:
        match = _AGE_RANGE.match(side)
        if not match:
            raise ValueError(f"{side.strip()!r} is not an age range like 20-40")
        ranges.append([int(match.group(1)), int(match.group(2))])
    return ranges


def parse_name_lists(text: str) -> list[list[str]] | None:
    """'nurse, doctor; teacher' -> [['nurse', 'doctor'], ['teacher']]; blank -> None.
    A blank side means anyone may play it."""
    sides = _two_sides(text, "names")
    if sides is None:
        return None
    return [[name.strip() for name in side.split(",") if name.strip()] for side in sides]


def format_age_constraint(ranges: list | None) -> str:
    return "; ".join(f"{low}-{high}" for low, high in ranges) if ranges else ""


def format_name_lists(lists: list[list[str]] | None) -> str:
    return "; ".join(", ".join(names) for names in lists) if lists else ""


def error_line_for(field: str | None) -> str:
    """The error line (widget id suffix) that shows a problem with `field`."""
    if not field:
        return "record"
    head, _, rest = field.partition(".")
    if head == "agent_goals" and rest[:1] in ("0", "1"):
        return f"goal-{rest[0]}"
    return _ERROR_LINE.get(head, "record")


# -- the widget ------------------------------------------------------------------------------


class ScenarioForm(VerticalScroll):
    """Fields of one scenario, checked on every change; posts `Checked` after each check."""

    DEFAULT_CSS = """
    ScenarioForm {
        height: 1fr;
        padding: 0 1;
    }
    ScenarioForm Label {
        margin-top: 1;
        text-style: bold;
    }
    ScenarioForm TextArea {
        height: 5;
    }
    ScenarioForm #form-scenario {
        height: 6;
    }
    ScenarioForm .pickers {
        height: auto;
    }
    ScenarioForm .pickers > Vertical {
        height: auto;
        width: 1fr;
    }
    ScenarioForm .field-error {
        color: $error;
        height: auto;
    }
    ScenarioForm #form-summary {
        margin-top: 1;
        height: auto;
        text-style: bold;
    }
    """

    class Checked(Message):
        """The form was checked: its problems (empty when it can be saved) and who can play it."""

        def __init__(self, form: ScenarioForm, errors: list[FieldError], pairs: int) -> None:
            super().__init__()
            self.form = form
            self.errors = errors
            self.pairs = pairs

        @property
        def control(self) -> ScenarioForm:
            return self.form

    def __init__(
        self,
        characters: dict[str, Character],
        relationships: list[Relationship],
        *,
        extra_check: ExtraCheck | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.characters = characters
        self.relationships = relationships
        self.extra_check = extra_check
        self.errors: list[FieldError] = [FieldError(field=None, message="empty")]
        self.pair_count = 0
        self._loading = False
        # An empty form shows a field's problems once it is typed in; a loaded one shows all.
        self.show_all = False
        self.touched: set[str] = {"record"}

    def compose(self) -> ComposeResult:
        levels = [(level.name.replace("_", " "), level.name) for level in RelationshipLevel]
        yield Label("Codename (lower_case_words)")
        yield Input(placeholder="e.g. shared_car_weekend", id="form-codename")
        yield Static(classes="field-error", id="error-codename")
        with Horizontal(classes="pickers"):
            with Vertical():
                yield Label("Category")
                yield Select([(c, c) for c in CATEGORIES], prompt="category", id="form-category")
                yield Static(classes="field-error", id="error-category")
            with Vertical():
                yield Label("Relationship the two have")
                yield Select(levels, prompt="relationship", id="form-relationship")
                yield Static(classes="field-error", id="error-relationship")
        yield Label("Shared context (both sides see it)")
        yield TextArea(id="form-scenario", soft_wrap=True, show_line_numbers=False)
        yield Static(classes="field-error", id="error-scenario")
        for side in (0, 1):
            yield Label(f"Goal of side {side + 1} (private; hints in <extra_info>, <strategy_hint>)")
            yield TextArea(id=f"form-goal-{side}", soft_wrap=True, show_line_numbers=False)
            yield Static(classes="field-error", id=f"error-goal-{side}")
        yield Label("Ages, side 1; side 2 (blank: any age)")
        yield Input(placeholder="e.g. 18-30; 40-70", id="form-ages")
        yield Static(classes="field-error", id="error-ages")
        yield Label("Occupations, side 1; side 2 (blank: any)")
        yield Input(placeholder="e.g. nurse, doctor; teacher", id="form-occupations")
        yield Static(classes="field-error", id="error-occupations")
        yield Label("Only these characters (ids), side 1; side 2 (blank: anyone)")
        yield Input(placeholder="e.g. mara-okafor; tobi-okafor", id="form-agents")
        yield Static(classes="field-error", id="error-agents")
        yield Static(classes="field-error", id="error-record")
        yield Static(id="form-summary")

    def on_mount(self) -> None:
        self.check()

    # -- filling and reading --------------------------------------------------------------

    def load(self, scenario: Scenario | dict[str, Any] | None) -> None:
        """Show a scenario (or a library-format dict); None empties the form."""
        data = scenario_to_dict(scenario) if isinstance(scenario, Scenario) else dict(scenario or {})
        goals = list(data.get("agent_goals") or []) + ["", ""]
        self._loading = True
        try:
            self.query_one("#form-codename", Input).value = data.get("codename", "")
            self._set_select("#form-category", data.get("category"))
            level = data.get("relationship")
            self._set_select("#form-relationship", RelationshipLevel.parse(level).name if level is not None else None)
            self.query_one("#form-scenario", TextArea).text = data.get("scenario", "")
            for side in (0, 1):
                self.query_one(f"#form-goal-{side}", TextArea).text = goals[side]
            self.query_one("#form-ages", Input).value = format_age_constraint(data.get("age_constraint"))
            self.query_one("#form-occupations", Input).value = format_name_lists(data.get("occupation_constraint"))
            self.query_one("#form-agents", Input).value = format_name_lists(data.get("agent_constraint"))
        finally:
            self._loading = False
        self.show_all = scenario is not None
        self.touched = {"record"}
        self.check()

    def _set_select(self, selector: str, value: str | None) -> None:
        select = self.query_one(selector, Select)
        try:
            select.value = value if value is not None else Select.NULL
        except InvalidSelectValueError:  # a category the library does not know: leave it to pick
            select.clear()

    def data(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The library-format dict typed so far, and problems with the text of its fields that
        the engine never sees (an age range it cannot read)."""
        problems: list[FieldError] = []
        data: dict[str, Any] = {
            "codename": self.query_one("#form-codename", Input).value.strip(),
            "scenario": self.query_one("#form-scenario", TextArea).text.strip(),
            "agent_goals": [self.query_one(f"#form-goal-{side}", TextArea).text.strip() for side in (0, 1)],
        }
        for name, selector in (("category", "#form-category"), ("relationship", "#form-relationship")):
            value = self.query_one(selector, Select).value
            if isinstance(value, str):
                data[name] = value
        constraints = (
            ("age_constraint", "#form-ages", parse_age_constraint),
            ("occupation_constraint", "#form-occupations", parse_name_lists),
            ("agent_constraint", "#form-agents", parse_name_lists),
        )
        for name, selector, parse in constraints:
            try:
                value = parse(self.query_one(selector, Input).value)
            except ValueError as error:
                problems.append(FieldError(field=name, message=str(error)))
                continue
            if value is not None:
                data[name] = value
        return data, problems

    # -- checking -------------------------------------------------------------------------

    @on(Input.Changed)
    @on(TextArea.Changed)
    @on(Select.Changed)
    def _changed(self, event: Input.Changed | TextArea.Changed | Select.Changed) -> None:
        event.stop()
        if not self._loading:
            self.touched.add((event.control.id or "").removeprefix("form-"))
            self.check()

    def ready(self, use: str) -> bool:
        """Whether the form can be used now; if not, point at every problem, typed in or
        not, and say that nothing was `use` ("saved", "exported")."""
        if not self.check():
            return True
        self.show_all = True
        self._show(self.errors)
        self.notify(f"Fix the problems shown in red first; nothing was {use}.", severity="warning")
        return False

    def check(self) -> list[FieldError]:
        """Check what is typed, show each problem under its field, and post `Checked`."""
        data, errors = self.data()
        if not errors:
            errors = validate_scenario(data)
        scenario = None if errors else scenario_from_dict(data)
        if scenario is not None and self.extra_check is not None:
            errors = self.extra_check(scenario)
        self.pair_count = 0
        if scenario is not None and not errors:
            self.pair_count = len(valid_pairs(scenario, self.characters, self.relationships))
            if not self.pair_count:
                level = RelationshipLevel(scenario.relationship).name.replace("_", " ")
                message = f"no character pair has a {level} relationship that fits the constraints"
                errors = [FieldError(field="relationship", message=message)]
        self.errors = errors
        self._show(errors)
        self.post_message(self.Checked(self, errors, self.pair_count))
        return errors

    def _show(self, errors: list[FieldError]) -> None:
        lines: dict[str, list[str]] = {line: [] for line in _ERROR_LINES}
        for error in errors:
            line = error_line_for(error.field)
            # under its own field a problem needs no field name, unless it names a part of it
            plain = error.field in (None, *_ERROR_LINE) or line.startswith("goal-")
            lines[line].append(error.message if plain else str(error))
        for line, messages in lines.items():
            shown = messages if self.show_all or line in self.touched else []
            self.query_one(f"#error-{line}", Static).update("\n".join(f"✗ {m}" for m in shown))
        summary = self.query_one("#form-summary", Static)
        if errors:
            count = len(errors)
            summary.update(Text(f"{count} problem{'s' if count != 1 else ''} to fix before saving", style="bold red"))
        else:
            summary.update(Text(f"Ready to save: {self.pair_count} character pair(s) can play it", style="bold green"))
