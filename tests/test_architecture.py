"""The architecture's import rules (.importlinter) hold, and the check really catches a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / ".importlinter"), "--no-cache"],
        cwd=pythonpath, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_import_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_of_the_code(tmp_path: Path) -> Path:
    for package in ("sotopia_pi", "tui"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_engine_module_importing_textual_breaks_the_contract(tmp_path):
    copy = _copy_of_the_code(tmp_path)
    (copy / "sotopia_pi" / "sneaky.py").write_text("from textual.widgets import Static\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "sotopia_pi.sneaky -> textual" in result.stdout


def test_a_low_layer_importing_a_higher_one_breaks_the_layers_contract(tmp_path):
    copy = _copy_of_the_code(tmp_path)
    (copy / "sotopia_pi" / "store" / "upward.py").write_text(
        "def play():\n    from ..runner import EpisodeRunner\n\n    return EpisodeRunner\n"
    )
    result = _lint(copy)
    assert result.returncode != 0
    assert "The engine is layered one way" in result.stdout
    assert "sotopia_pi.store.upward -> sotopia_pi.runner" in result.stdout


def import_cycles(*packages: str) -> list[list[str]]:
    """One shortest cycle through each import that closes one, as [a, b, ..., a].

    Imports inside functions count: they run the first time the function does, and a cycle
    through them still means two modules that cannot be understood (or reordered) apart. Imports
    under `if TYPE_CHECKING:` do not: they never run. Neither does the import of a package's
    __init__ that Python makes before a submodule, which grimp does not record (a package's
    __init__ may import its submodules, and they theirs, without that counting as a cycle)."""
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append([importer, *back])
    return cycles


def test_the_engine_and_the_tui_have_no_import_cycles():
    cycles = import_cycles("sotopia_pi", "tui")
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_cycle_through_an_import_inside_a_function_is_found_and_one_for_types_only_is_not(tmp_path, monkeypatch):
    package = tmp_path / "looped"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def later():\n    from .high import run\n\n    return run\n")
    (package / "high.py").write_text("from .low import later\n\n\ndef run():\n    return later\n")
    (package / "hinted.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .user import use\n\n\nVALUE = 1\n"
    )
    (package / "user.py").write_text("from .hinted import VALUE\n\n\ndef use():\n    return VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("looped") == [["looped.high", "looped.low", "looped.high"], ["looped.low", "looped.high", "looped.low"]]
