"""The library's SQL (sotopia_pi/store/library.py): install state, seed uses and pairing removal,
read back through a reopened store so each write is shown to be committed."""

from __future__ import annotations

from sotopia_pi.library.install import keep_fitting_pairings
from sotopia_pi.profiles import Pairing
from sotopia_pi.store import Store
from sotopia_pi.store.library import (
    SeedUse,
    claim_seed,
    delete_pairing,
    library_state,
    seed_use_for_scenario,
    seed_uses,
    set_library_state,
)

from .factories import seed_store


def test_library_state_is_read_back_and_overwritten(store: Store):
    assert library_state(store, "library_digest") is None
    set_library_state(store, "library_digest", "first")
    set_library_state(store, "library_digest", "second")
    set_library_state(store, "other", "kept apart")
    with Store(store.path) as reopened:
        assert library_state(reopened, "library_digest") == "second"
        assert library_state(reopened, "other") == "kept apart"


def test_a_seed_is_claimed_once_and_found_by_its_scenario(store: Store):
    assert claim_seed(store, "a quarrel over a fence", "model-a", "fence")
    assert not claim_seed(store, "a quarrel over a fence", "model-b", "fence-again")
    assert claim_seed(store, "a lost umbrella", "model-b", "umbrella")
    with Store(store.path) as reopened:
        uses = {use.seed: use for use in seed_uses(reopened)}
        found = seed_use_for_scenario(reopened, "fence")
    assert set(uses) == {"a quarrel over a fence", "a lost umbrella"}
    assert uses["a quarrel over a fence"].model == "model-a"
    assert isinstance(found, SeedUse) and found.seed == "a quarrel over a fence" and found.created_at
    assert seed_use_for_scenario(store, "fence-again") is None


def test_delete_pairing_removes_only_that_pairing(store: Store):
    scenario = seed_store(store)
    first = Pairing(id="p1", scenario_id=scenario.id, agent_ids=["ines", "tomas"])
    second = Pairing(id="p2", scenario_id=scenario.id, agent_ids=["tomas", "ines"])
    store.save_pairing(first)
    store.save_pairing(second)
    delete_pairing(store, "p1")
    assert [p.id for p in store.pairings(scenario.id)] == ["p2"]


def test_keep_fitting_pairings_deletes_the_slot_orders_no_longer_allowed(store: Store):
    scenario = seed_store(store)
    store.save_pairing(Pairing(id="p1", scenario_id=scenario.id, agent_ids=["ines", "tomas"]))
    store.save_pairing(Pairing(id="p2", scenario_id=scenario.id, agent_ids=["tomas", "ines"]))
    kept, removed = keep_fitting_pairings(store, scenario.id, {("tomas", "ines")})
    assert [p.id for p in kept] == ["p2"] and removed == 1
    assert [p.id for p in store.pairings(scenario.id)] == ["p2"]
