"""The SOTOPIA data path is explicit: a test that needs the data fails loudly without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import SOTOPIA_DATA_ENV, SOTOPIA_MARKER

NEEDS_DATA = """
def test_reads_the_profiles(sotopia_dir):
    assert (sotopia_dir / "agent_profiles.jsonl").is_file()
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_needs_data=NEEDS_DATA)
    return pytester


def test_a_path_without_the_data_is_an_error_that_says_how_to_set_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv(SOTOPIA_DATA_ENV, str(tmp_path / "nowhere"))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{SOTOPIA_DATA_ENV}=*nowhere: no {SOTOPIA_MARKER} there*"])
    assert "skipped" not in result.stdout.str()


def test_the_variable_names_the_folder_that_is_used(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    (tmp_path / SOTOPIA_MARKER).write_text("", encoding="utf-8")
    monkeypatch.setenv(SOTOPIA_DATA_ENV, str(tmp_path))
    suite.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_this_run_has_the_data(sotopia_dir: Path):
    """The suite itself runs with the data (from the variable, or the folder beside the clone)."""
    assert (sotopia_dir / SOTOPIA_MARKER).is_file()
