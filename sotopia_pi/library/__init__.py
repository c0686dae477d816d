"""The built-in scenario library: characters, relationships, scenarios and seed prompts.

The library lives in TOML files under scenarios/ (see paths.library_dir()):

    characters.toml          [[character]] tables (sotopia_pi.profiles.Character fields)
    relationships.toml       [[relationship]] tables (Relationship fields)
    scenarios/<codename>.toml  one Scenario per file
    seed_prompts.txt         one inspirational prompt per line, for scenario generation

The package, one stage per module, each importing only those above it:

    records     the field rules of a library record, FieldError/Problem/LibraryError, Library
    toml_style  records written back in the library's TOML style
    loader      `load_library`: every file read and checked, every problem reported at once
    install     `ensure_library` / `install_library`: the library into a store, with pairings
    authoring   single records written by a person, into the store or a library folder
    sotopia_io  SOTOPIA's profile files in and out (used by records for its hint-tag rule)
    generate    new scenarios from seed prompts with any ChatBackend
    expert_corpus  the hand-written expert episodes of scenarios/expert/

Their SQL lives in sotopia_pi/store/library.py. This module re-exports the public names of
the first five, so `from sotopia_pi.library import load_library` keeps working.
"""

from __future__ import annotations

from .authoring import (
    AUTHORED_SOURCE,
    export_character,
    save_authored_character,
    save_authored_relationship,
    save_authored_scenario,
    write_scenario_file,
)
from .install import InstallReport, choose_pairings, ensure_library, install_library, installed_digest
from .loader import CHARACTERS_FILE, RELATIONSHIPS_FILE, SCENARIOS_DIR, SEEDS_FILE, library_digest, load_library
from .records import (
    CATEGORIES,
    LIBRARY_SOURCE,
    MAX_AGE,
    MIN_AGE,
    MIN_GOAL_CHARS,
    MIN_PAIRS,
    MIN_SCENARIO_CHARS,
    PAIRINGS_PER_SCENARIO,
    FieldError,
    Library,
    LibraryError,
    Problem,
    RecordError,
    character_from_dict,
    scenario_from_dict,
    validate_character,
    validate_scenario,
)
from .toml_style import character_to_dict, character_to_toml, relationship_to_toml, scenario_to_dict, scenario_to_toml

__all__ = [
    "AUTHORED_SOURCE",
    "CATEGORIES",
    "CHARACTERS_FILE",
    "LIBRARY_SOURCE",
    "MAX_AGE",
    "MIN_AGE",
    "MIN_GOAL_CHARS",
    "MIN_PAIRS",
    "MIN_SCENARIO_CHARS",
    "PAIRINGS_PER_SCENARIO",
    "RELATIONSHIPS_FILE",
    "SCENARIOS_DIR",
    "SEEDS_FILE",
    "FieldError",
    "InstallReport",
    "Library",
    "LibraryError",
    "Problem",
    "RecordError",
    "character_from_dict",
    "character_to_dict",
    "character_to_toml",
    "choose_pairings",
    "ensure_library",
    "export_character",
    "install_library",
    "installed_digest",
    "library_digest",
    "load_library",
    "relationship_to_toml",
    "save_authored_character",
    "save_authored_relationship",
    "save_authored_scenario",
    "scenario_from_dict",
    "scenario_to_dict",
    "scenario_to_toml",
    "validate_character",
    "validate_scenario",
    "write_scenario_file",
]
