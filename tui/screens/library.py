"""The library: browse scenarios and characters, pick who plays, pick the models, start."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, OptionList, Select, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from sotopia_pi.adapters import list_adapters
from sotopia_pi.casting import scenario_pairs
from sotopia_pi.catalog import CatalogError, is_pulled, load_catalog
from sotopia_pi.config import Settings
from sotopia_pi.profiles import Character, RelationshipLevel, Scenario
from sotopia_pi.runner import EpisodeSetup, new_episode
from sotopia_pi.visibility import render_goal

from ..errors import describe
from ..widgets.fkeys import FKeyBar
from .adapter_picker import AdapterPick, AdapterPickerScreen
from .character_editor import CharacterEditorScreen
from .scenario_editor import ScenarioEditorScreen

HUMAN = "human"
NO_JUDGE = ""
MAX_TURNS_LIMIT = 200  # as in Settings


def pulled_catalog_models() -> list[tuple[str, str]]:
    """Catalog GGUFs already downloaded (`sotopia-pi models pull NAME`), as model choices."""
    try:
        catalog = load_catalog()
        return [
            (f"{entry.name} (catalog)", entry.model_name)
            for entry in catalog.models.values()
            if entry.kind == "gguf" and is_pulled(entry.name, catalog)
        ]
    except (CatalogError, OSError, ValueError):  # a broken catalog only costs these choices
        return []


def preset_model_choices(settings: Settings) -> list[tuple[str, str]]:
    """The settings' model presets, then pulled catalog models that are not among them."""
    presets = [(p.name, p.model) for p in settings.model_choices()]
    known = {model for _, model in presets}
    return presets + [(label, model) for label, model in pulled_catalog_models() if model not in known]


def scenario_matches(scenario: Scenario, needle: str) -> bool:
    fields = [scenario.id, scenario.codename, scenario.source, scenario.category, scenario.scenario, *scenario.agent_goals]
    return any(needle in field.lower() for field in fields)


def character_matches(character: Character, needle: str) -> bool:
    fields = [character.id, character.name, character.occupation, character.public_info]
    return any(needle in field.lower() for field in fields)


def level_name(level: RelationshipLevel) -> str:
    return level.name.replace("_", " ")


def scenario_details(scenario: Scenario, names: dict[str, str] | None = None) -> Text:
    """The scenario in words; `names` (character id -> name) for its character constraint."""
    text = Text()
    text.append(scenario.codename or scenario.id, style="bold")
    extras = " · ".join(part for part in (scenario.source, scenario.category) if part)
    text.append(f"  ({scenario.id}{' · ' + extras if extras else ''})\n", style="dim")
    text.append("Relationship it needs: ", style="bold")
    text.append(f"{level_name(scenario.relationship)}\n")
    text.append("Shared context: ", style="bold")
    text.append(f"{scenario.scenario.strip()}\n")
    for side, goal in enumerate(scenario.agent_goals):
        text.append(f"Goal of side {side + 1}: ", style="bold")
        text.append(f"{render_goal(goal)}\n")
    for label, value in constraint_lines(scenario, names or {}):
        text.append(f"{label}: ", style="bold")
        text.append(f"{value}\n")
    return text


def per_side(values: list[str]) -> str:
    return "; ".join(f"side {side + 1} {value}" for side, value in enumerate(values))


def constraint_lines(scenario: Scenario, names: dict[str, str]) -> list[tuple[str, str]]:
    """The scenario's constraints on who may play it, in words, side by side."""
    lines = []
    if scenario.age_constraint is not None:
        lines.append(("Ages", per_side([f"{low}–{high}" for low, high in scenario.age_constraint])))
    if scenario.occupation_constraint is not None:
        lines.append(("Occupations", per_side([" or ".join(jobs) or "any" for jobs in scenario.occupation_constraint])))
    if scenario.agent_constraint is not None:
        lines.append(
            ("Only these characters", per_side([" or ".join(names.get(i, i) for i in ids) or "any" for ids in scenario.agent_constraint]))
        )
    return lines


def character_details(character: Character) -> Text:
    text = Text()
    text.append(character.name, style="bold")
    text.append(f"  ({character.id})\n", style="dim")
    facts = [
        ("Age", str(character.age) if character.age else ""),
        ("Occupation", character.occupation),
        ("Gender", " ".join(p for p in (character.gender, character.gender_pronoun) if p)),
        ("Public info", character.public_info),
        ("Personality and values", character.personality_and_values),
        ("Big five", character.big_five),
        ("Moral values", ", ".join(character.moral_values)),
        ("Decision making", character.decision_making_style),
        ("MBTI", character.mbti),
        ("Secret", character.secret),
    ]
    for label, value in facts:
        if value:
            text.append(f"{label}: ", style="bold")
            text.append(f"{value}\n")
    return text


class LibraryScreen(Screen):
    SUB_TITLE = "Library — pick a scenario, who plays, and the models"
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("ctrl+t", "switch_list", "Scenarios/characters"),
        Binding("ctrl+r", "start", "Start episode"),
        Binding("ctrl+p", "play_adapter", "Play vs adapter"),
        Binding("ctrl+n", "new_record", "New"),
        Binding("ctrl+o", "edit_record", "Edit"),
        Binding("escape", "leave_search", "Leave the search", show=False),
        Binding("j", "move(1)", "Down in a list", show=False),
        Binding("k", "move(-1)", "Up in a list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.scenarios: list[Scenario] = []
        self.characters: dict[str, Character] = {}
        self.selected: Scenario | None = None
        self.pairs: list[tuple[str, str]] = []
        self._wanted_partner: str | None = None
        self._settings_shown: Settings | None = None

    @property
    def character_names(self) -> dict[str, str]:
        return {character_id: c.name for character_id, c in self.characters.items()}

    @property
    def settings(self) -> Settings:
        return self.app.settings  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        settings = self.settings
        self._settings_shown = settings
        side1, side2, judge = self.model_options()
        yield FKeyBar()
        with Horizontal(id="library"):
            with Vertical(id="library-left"):
                yield Input(placeholder="search scenarios and characters  (/)", id="search")
                with TabbedContent(id="library-tabs"):
                    with TabPane("Scenarios", id="tab-scenarios"):
                        yield OptionList(id="scenario-list")
                    with TabPane("Characters", id="tab-characters"):
                        yield OptionList(id="character-list")
            with Vertical(id="library-right"):
                with VerticalScroll(id="details-scroll"):
                    yield Static(id="details")
                yield Label("Character pairs that fit the selected scenario", classes="section", id="pairs-title")
                yield OptionList(id="pair-list")
                with Horizontal(classes="form-row"):
                    yield Label("Side 1", classes="form-label")
                    yield Select([], prompt="character", id="character1")
                    yield Select(side1, value=settings.agent1_model, id="model1", allow_blank=False)
                with Horizontal(classes="form-row"):
                    yield Label("Side 2", classes="form-label")
                    yield Select([], prompt="character", id="character2")
                    yield Select(side2, value=settings.agent2_model, id="model2", allow_blank=False)
                with Horizontal(classes="form-row"):
                    yield Label("Judge", classes="form-label")
                    yield Select(judge, value=settings.judge_model, id="judge", allow_blank=False)
                with Horizontal(classes="form-row", id="start-row"):
                    yield Label("Turns", classes="form-label")
                    yield Input(str(settings.max_turns), id="max-turns", type="integer", max_length=4)
                    yield Checkbox("live scores", settings.live_eval, id="live-eval")
                    yield Button("Start episode  ^r", id="start", variant="success")
        yield Footer(compact=True)

    def on_resize(self) -> None:
        """Below 32 rows the form's fields drop their borders, so that Start stays in sight."""
        compact = self.size.height < 32
        for widget in self.query("#library-right Select, #library-right Input, #library-right Checkbox, #start"):
            widget.compact = compact  # type: ignore[attr-defined]
        self.query_one("#start", Button).label = "Start  ^r" if self.size.width < 100 else "Start episode  ^r"

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#scenario-list", OptionList).focus()  # so that / searches, j/k move

    # -- data -----------------------------------------------------------------------------

    def reload(self) -> None:
        """Read scenarios and characters from the store (a bad record is reported, not fatal)."""
        store = self.app.store  # type: ignore[attr-defined]
        try:
            self.scenarios = store.scenarios()
            self.characters = {c.id: c for c in store.characters()}
            self.relationships = store.relationships()
        except Exception as error:  # a record that no longer validates: say which
            self.scenarios, self.characters, self.relationships = [], {}, []
            self.query_one("#details", Static).update(
                Text(f"The library could not be read: {describe(error)}", style="red")
            )
            self.notify(describe(error), title="Library error", severity="error", timeout=15)
            return
        self.fill_lists()
        if not self.scenarios:
            self.query_one("#details", Static).update(
                "The library is empty. Import SOTOPIA's scenarios with "
                "`sotopia-pi import-sotopia DIR`, then come back (F2)."
            )

    def on_screen_resume(self) -> None:
        if self._settings_shown is not self.settings:
            self.fill_model_choices()
        self.reload()  # scenarios generated or written elsewhere since

    def model_options(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """Choices for side 1, side 2 and the judge: the presets, plus whatever the settings
        name that is not a preset, plus a person (agents) or no judge."""
        settings = self.settings
        presets = preset_model_choices(settings)
        known = {model for _, model in presets}
        sides = []
        for default in settings.agent_models:
            options = list(presets)
            if default not in known and default != HUMAN:
                options.append((f"{default} (from settings)", default))
            options.append(("human: you play this side", HUMAN))
            sides.append(options)
        judge = list(presets)
        if settings.judge_model and settings.judge_model not in known:
            judge.append((f"{settings.judge_model} (from settings)", settings.judge_model))
        judge.append(("no judge (no scores)", NO_JUDGE))
        return sides[0], sides[1], judge

    def fill_model_choices(self) -> None:
        settings = self.settings
        self._settings_shown = settings
        defaults = (*settings.agent_models, settings.judge_model)
        for widget_id, options, default in zip(("#model1", "#model2", "#judge"), self.model_options(), defaults):
            select = self.query_one(widget_id, Select)
            select.set_options(options)
            select.value = default
        self.query_one("#max-turns", Input).value = str(settings.max_turns)
        self.query_one("#live-eval", Checkbox).value = settings.live_eval

    def fill_lists(self) -> None:
        needle = self.query_one("#search", Input).value.strip().lower()
        scenarios = [s for s in self.scenarios if not needle or scenario_matches(s, needle)]
        scenario_list = self.query_one("#scenario-list", OptionList)
        scenario_list.clear_options()
        scenario_list.add_options(
            Option(
                Text.assemble((s.codename or s.id, "bold"), (f"  {level_name(s.relationship)}", "dim")),
                id=s.id,
            )
            for s in scenarios
        )
        characters = [c for c in self.characters.values() if not needle or character_matches(c, needle)]
        character_list = self.query_one("#character-list", OptionList)
        highlighted = character_list.highlighted_option
        character_list.clear_options()
        character_list.add_options(
            Option(Text.assemble((c.name, "bold"), (f"  {c.occupation}", "dim")), id=c.id) for c in characters
        )
        self.highlight_character(highlighted.id if highlighted is not None else None)
        if not characters and self.showing_characters:
            self.query_one("#details", Static).update("No character matches the search.")
        # the scenario an episode would start with is always the one highlighted in the list
        shown = [s.id for s in scenarios]
        if self.selected is not None and self.selected.id in shown:
            scenario_list.highlighted = shown.index(self.selected.id)
        elif scenarios:
            scenario_list.highlighted = 0
        else:
            self.forget_scenario()

    # -- browsing -------------------------------------------------------------------------

    @on(Input.Changed, "#search")
    def _search(self) -> None:
        self.fill_lists()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        tabs = self.query_one(TabbedContent)
        target = "#scenario-list" if tabs.active == "tab-scenarios" else "#character-list"
        self.query_one(target, OptionList).focus()

    @on(OptionList.OptionHighlighted, "#scenario-list")
    def _scenario_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        scenario = next((s for s in self.scenarios if s.id == event.option.id), None)
        if scenario is not None:
            self.select_scenario(scenario)

    @on(OptionList.OptionSelected, "#scenario-list")
    def _scenario_chosen(self) -> None:
        self.query_one("#pair-list", OptionList).focus()

    @on(OptionList.OptionHighlighted, "#character-list")
    def _character_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        character = self.characters.get(event.option.id or "")
        if character is not None:
            self.query_one("#details", Static).update(character_details(character))

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        """The details follow the tab: its highlighted record, or why there is none."""
        details = self.query_one("#details", Static)
        if event.pane.id == "tab-scenarios":
            if self.selected is not None:
                details.update(scenario_details(self.selected, self.character_names))
            elif self.scenarios:
                details.update("No scenario matches the search.")
            return
        option = self.query_one("#character-list", OptionList).highlighted_option
        character = self.characters.get(option.id or "") if option is not None else None
        if character is not None:
            details.update(character_details(character))
        else:
            searching = bool(self.query_one("#search", Input).value.strip())
            details.update("No character matches the search." if searching else "Pick a character.")

    def select_scenario(self, scenario: Scenario) -> None:
        self.selected = scenario
        self.query_one("#details", Static).update(scenario_details(scenario, self.character_names))
        self.query_one("#pairs-title", Label).update(
            f"Character pairs that fit {scenario.codename or scenario.id} "
            f"({level_name(scenario.relationship)})"
        )
        store = self.app.store  # type: ignore[attr-defined]
        found = scenario_pairs(store, scenario, self.characters, self.relationships)
        pairs = found.pairs
        self.pairs = pairs  # type: ignore[assignment]
        pair_list = self.query_one("#pair-list", OptionList)
        pair_list.clear_options()
        if not pairs:
            pair_list.add_option(
                Option(
                    f"No two characters have the relationship this scenario needs "
                    f"({level_name(scenario.relationship)}).",
                    disabled=True,
                )
            )
        for first, second in pairs:
            label = Text.assemble(
                (self.characters[first].name, "bold"), " & ", (self.characters[second].name, "bold")
            )
            if (first, second) in found.on_record:
                label.append("  (pairing on record)", style="dim")
            pair_list.add_option(Option(label, id=f"{first}|{second}"))
        firsts = list(dict.fromkeys(first for first, _ in pairs))
        character1 = self.query_one("#character1", Select)
        character1.set_options((self.characters[c].name, c) for c in firsts)
        self.query_one("#character2", Select).set_options([])
        if pairs:
            self.choose_pair(*pairs[0])

    def forget_scenario(self) -> None:
        self.selected = None
        self.pairs = []
        self.query_one("#pair-list", OptionList).clear_options()
        self.query_one("#character1", Select).set_options([])
        self.query_one("#character2", Select).set_options([])
        self.query_one("#details", Static).update("No scenario matches the search.")

    def choose_pair(self, first: str, second: str) -> None:
        character1 = self.query_one("#character1", Select)
        self._wanted_partner = second
        if character1.value == first:
            self._fill_partners(first)
        else:
            character1.value = first

    @on(OptionList.OptionSelected, "#pair-list")
    @on(OptionList.OptionHighlighted, "#pair-list")
    def _pair_chosen(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id and "|" in event.option.id:
            first, second = event.option.id.split("|", 1)
            self.choose_pair(first, second)

    @on(Select.Changed, "#character1")
    def _character1_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._fill_partners(event.value)

    def _fill_partners(self, first: str) -> None:
        partners = list(dict.fromkeys(second for one, second in self.pairs if one == first))
        character2 = self.query_one("#character2", Select)
        character2.set_options((self.characters[c].name, c) for c in partners)
        wanted = self._wanted_partner if self._wanted_partner in partners else None
        self._wanted_partner = None
        if wanted is None and partners:
            wanted = partners[0]
        if wanted is not None:
            character2.value = wanted

    # -- actions --------------------------------------------------------------------------

    @property
    def showing_characters(self) -> bool:
        return self.query_one(TabbedContent).active == "tab-characters"

    def action_new_record(self) -> None:
        store = self.app.store  # type: ignore[attr-defined]
        if self.showing_characters:
            self.app.push_screen(CharacterEditorScreen(store), self._character_edited)
        else:
            self.app.push_screen(ScenarioEditorScreen(store), self._scenario_edited)

    def action_edit_record(self) -> None:
        store = self.app.store  # type: ignore[attr-defined]
        if self.showing_characters:
            option = self.query_one("#character-list", OptionList).highlighted_option
            if option is None or option.id is None:
                self.notify("Pick a character to edit first.", severity="warning")
                return
            self.app.push_screen(CharacterEditorScreen(store, option.id), self._character_edited)
        elif self.selected is None:
            self.notify("Pick a scenario to edit first.", severity="warning")
        else:
            self.app.push_screen(ScenarioEditorScreen(store, self.selected), self._scenario_edited)

    def _scenario_edited(self, scenario_id: str | None) -> None:
        """Back from the scenario editor: show the saved scenario."""
        self.reload()
        scenario = next((s for s in self.scenarios if s.id == scenario_id), None)
        if scenario is not None:
            self.selected = scenario
            self._show_everything()

    def _character_edited(self, character_id: str | None) -> None:
        """Back from the character editor: show the saved character."""
        self.reload()
        if character_id not in self.characters:
            return
        self._show_everything()
        self.highlight_character(character_id)

    def highlight_character(self, character_id: str | None) -> None:
        character_list = self.query_one("#character-list", OptionList)
        shown = [option.id for option in character_list.options]
        if character_id in shown:
            character_list.highlighted = shown.index(character_id)

    def _show_everything(self) -> None:
        self.query_one("#search", Input).value = ""
        self.fill_lists()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def _shown_list(self) -> OptionList:
        return self.query_one("#character-list" if self.showing_characters else "#scenario-list", OptionList)

    def action_leave_search(self) -> None:
        if isinstance(self.focused, Input):
            self._shown_list().focus()

    def action_move(self, step: int) -> None:
        """j/k: down or up in the focused list (the scenario list when none is)."""
        target = self.focused if isinstance(self.focused, OptionList) else self._shown_list()
        target.focus()
        if step > 0:
            target.action_cursor_down()
        else:
            target.action_cursor_up()

    def action_switch_list(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "tab-characters" if tabs.active == "tab-scenarios" else "tab-scenarios"
        target = "#scenario-list" if tabs.active == "tab-scenarios" else "#character-list"
        self.query_one(target, OptionList).focus()

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        setup = self.current_setup()
        if setup is not None:
            self.start_episode(setup)

    def action_play_adapter(self) -> None:
        """You play side 1 against side 2's model with a trained adapter: pick it, Enter starts."""
        if self.current_setup() is None:
            return
        try:
            records = list_adapters(self.app.store)  # type: ignore[attr-defined]
        except Exception as error:  # a record that no longer validates
            self.notify(describe(error), title="Cannot read the adapters", severity="error")
            return
        if not records:
            self.notify("No trained adapter yet: train one on the Train screen (F7).", severity="warning")
            return
        names = [self.characters[str(self.query_one(f"#character{side}", Select).value)].name for side in (1, 2)]
        self.app.push_screen(
            AdapterPickerScreen(
                records,
                title=f"You play {names[0]}; {names[1]} is played by the adapter you pick. Enter starts.",
                sides={1: f"{names[1]} (side 2)"},
                side=1,
                with_base=False,
            ),
            self._play_against,
        )

    def _play_against(self, pick: AdapterPick | None) -> None:
        setup = self.current_setup()
        if pick is None or pick.record is None or setup is None:
            return
        opponent = f"{pick.record.base_model}+adapter={pick.record.reference}"
        self.start_episode(replace(setup, agent_models=(HUMAN, opponent)))

    def start_episode(self, setup: EpisodeSetup) -> None:
        app = self.app
        try:
            episode = new_episode(app.store, setup)  # type: ignore[attr-defined]
        except Exception as error:  # a bad model name, a missing record: say so, lose nothing
            self.notify(describe(error), title="Cannot start", severity="error", timeout=10)
            return
        app.open_episode(episode.id)  # type: ignore[attr-defined]

    def current_setup(self) -> EpisodeSetup | None:
        if self.selected is None:
            self.notify("Pick a scenario first.", severity="warning")
            return None
        values = [self.query_one(f"#{name}", Select).value for name in ("character1", "character2")]
        if not all(isinstance(v, str) for v in values):
            self.notify("Pick a pair of characters that fits this scenario.", severity="warning")
            return None
        models = tuple(str(self.query_one(f"#model{side}", Select).value) for side in (1, 2))
        judge = self.query_one("#judge", Select).value
        max_turns = self.max_turns()
        if max_turns is None:
            return None
        return EpisodeSetup(
            scenario_id=self.selected.id,
            agent_ids=(values[0], values[1]),  # type: ignore[arg-type]
            agent_models=models,  # type: ignore[arg-type]
            judge_model=str(judge) if isinstance(judge, str) else NO_JUDGE,
            max_turns=max_turns,
            live_eval=self.query_one("#live-eval", Checkbox).value,
        )

    def max_turns(self) -> int | None:
        """The turns box as a number, or None (said, and the box focused) when it is not one."""
        box = self.query_one("#max-turns", Input)
        try:
            turns = int(box.value.strip())
        except ValueError:
            turns = 0
        if not 1 <= turns <= MAX_TURNS_LIMIT:
            self.notify(f"Max turns is a whole number from 1 to {MAX_TURNS_LIMIT}.", severity="warning")
            box.focus()
            return None
        return turns
