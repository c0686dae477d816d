"""Who plays a scenario: one choice for the CLI and the TUI's library screen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotopia_pi.casting import CastingError, choose_characters, scenario_pairs
from sotopia_pi.errors import SotopiaError
from sotopia_pi.profiles import Pairing, RelationshipLevel
from sotopia_pi.store import Store

from .factories import action, bike_scenario, seed_store
from .helpers import cli, replay_model


@pytest.fixture
def bike(store: Store) -> Store:
    seed_store(store)
    return store


def test_fitting_pairs_follow_the_relationship_profiles(bike: Store):
    found = scenario_pairs(bike, bike.scenario("bike-sale"))
    assert found.pairs == [("ines", "tomas"), ("tomas", "ines")]
    assert found.on_record == set() and found.first == ("ines", "tomas")


def test_a_pairing_on_record_comes_first_once(bike: Store):
    bike.save_pairing(Pairing(scenario_id="bike-sale", agent_ids=["tomas", "ines"]))
    bike.save_pairing(Pairing(scenario_id="bike-sale", agent_ids=["tomas", "ines"]))
    found = scenario_pairs(bike, bike.scenario("bike-sale"))
    assert found.pairs == [("tomas", "ines"), ("ines", "tomas")]
    assert found.on_record == {("tomas", "ines")}
    assert choose_characters(bike, "bike-sale") == ("tomas", "ines")


def test_a_pairing_whose_character_is_gone_is_left_out(bike: Store):
    bike.save_pairing(Pairing(scenario_id="bike-sale", agent_ids=["ines", "ghost"]))
    found = scenario_pairs(bike, bike.scenario("bike-sale"))
    assert ("ines", "ghost") not in found.pairs and found.on_record == set()
    assert choose_characters(bike, "bike-sale") == ("ines", "tomas")


def test_given_characters_and_pairings_are_used_as_given(bike: Store):
    pairing = Pairing(scenario_id="bike-sale", agent_ids=["tomas", "ines"])
    bike.save_pairing(pairing)
    assert choose_characters(bike, "bike-sale", pairing=pairing.id) == ("tomas", "ines")
    assert choose_characters(bike, "bike-sale", characters="Tomas Reyes, ines") == ("tomas", "ines")


def test_no_fitting_pair_is_a_sotopia_error_saying_what_to_pass(bike: Store):
    bike.save_scenario(bike_scenario(RelationshipLevel.family_member).model_copy(update={"id": "family-sale", "codename": "family_sale"}))
    assert scenario_pairs(bike, bike.scenario("family-sale")).pairs == []
    with pytest.raises(CastingError, match="pass --characters A,B") as caught:
        choose_characters(bike, "family-sale")
    assert isinstance(caught.value, SotopiaError)


def test_the_cli_plays_the_pair_the_library_screen_lists_first(bike: Store, tmp_path: Path):
    bike.save_pairing(Pairing(scenario_id="bike-sale", agent_ids=["tomas", "ines"]))
    result = cli(
        "run", "--scenario", "bike_sale", "--judge", "", "--json",
        "--agent1", replay_model(tmp_path / "a.json", [action("leave")]),
        "--agent2", replay_model(tmp_path / "b.json", []),
    )
    assert result.exit_code == 0, result.stderr
    agents = [a["character_id"] for a in json.loads(result.stdout)["agents"]]
    assert tuple(agents) == scenario_pairs(bike, bike.scenario("bike-sale")).first == ("tomas", "ines")
