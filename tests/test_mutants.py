"""The mutation-testing tool: every mutant still applies, and one is really killed."""

from __future__ import annotations

import pathlib

import pytest

from tools import mutants

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
    assert len(names) >= 22


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_to_the_current_source(mutant: mutants.Mutant) -> None:
    # Other work edits the policy and the core: a mutant whose snippet no longer occurs
    # exactly once would silently test nothing, so the suite fails here instead.
    for path, old, new in mutant.edits:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{mutant.name}: snippet not found once in {path}"
        assert old != new


def test_apply_fails_loudly_when_a_snippet_is_missing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "lanes").mkdir()
    (tmp_path / "lanes" / "_policy.py").write_text("nothing to patch\n", encoding="utf-8")
    mutant = mutants.Mutant("x", "y", (("lanes/_policy.py", "absent", "present"),))
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutant.apply(tmp_path)


def test_apply_patches_a_copy(tmp_path: pathlib.Path) -> None:
    (tmp_path / "lanes").mkdir()
    file = tmp_path / "lanes" / "_policy.py"
    file.write_text("a < b\n", encoding="utf-8")
    mutants.Mutant("x", "y", (("lanes/_policy.py", "a < b", "a > b"),)).apply(tmp_path)
    assert file.read_text(encoding="utf-8") == "a > b\n"


@pytest.mark.parametrize(("name", "module"), mutants.QUICK.items(), ids=list(mutants.QUICK))
def test_the_quick_subset_is_killed(name: str, module: str) -> None:
    # CI's mutation check: each mutant of the fast subset must make the property test
    # module that kills it fail (seed 0; measured in 5-8 CPU s). A mutant that survives
    # means a property test was weakened: its invariant, a strategy or a coverage minimum.
    mutant = next(m for m in mutants.MUTANTS if m.name == name)
    result = mutants.run_mutant(mutant, [module], seed=0, timeout=60.0)
    assert result.killed, (
        f"mutant {name} ({mutant.description}) survived {module}: {result.detail or 'passed'}"
    )
    assert result.by == module


def test_a_survivor_is_reported_as_such() -> None:
    # The other side: a "mutant" that changes nothing survives, so "killed" above means
    # the tests failed because of the bug. (One quick regression test of the policy.)
    noop = mutants.Mutant(
        "noop", "nothing", (("lanes/_policy.py", "class Decision:", "class Decision:"),)
    )
    test = "tests/test_policy_model.py::test_boost_wakeup_is_in_the_future"
    result = mutants.run_mutant(noop, [test])
    assert not result.killed
    assert result.detail == ""


def test_the_quick_subset_names_real_mutants() -> None:
    names = {m.name for m in mutants.MUTANTS}
    assert mutants.QUICK
    assert set(mutants.QUICK) <= names
    assert set(mutants.QUICK.values()) <= set(mutants.PROPERTY_TESTS)
