"""Every scenario in tests/scenarios/*.txt replayed through the responder's core (tests/scenarios/runner.py), and
the runner's own guarantees: a wrong expectation fails naming its line, a file it cannot run is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.runner import ScenarioError, ScenarioMismatch, check, parse, run

HERE = Path(__file__).resolve().parent
SCENARIOS = sorted(HERE.glob("*.txt"))


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 8, SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, tmp_path: Path) -> None:
    s = parse(path)
    check(s, run(s, tmp_path))


def _edited(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (HERE / name).read_text()
    assert text.count(old) == 1, old
    out = tmp_path / name
    out.write_text(text.replace(old, new))
    return out


def test_a_wrong_expectation_fails_naming_its_line(tmp_path: Path) -> None:
    path = _edited(tmp_path, "ban_then_unban.txt", "1700000060 unban scan 203.0.113.5 expired",
                   "1700000070 unban scan 203.0.113.5 expired")
    s = parse(path)
    line = next(n for n, want in s.expect if want.startswith("1700000070"))
    with pytest.raises(ScenarioMismatch) as info:
        (tmp_path / "run").mkdir()
        check(s, run(s, tmp_path / "run"))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: expected '1700000070 unban scan 203.0.113.5 expired'")
    assert "got      '1700000060 unban scan 203.0.113.5 expired'" in message


def test_a_wrong_bantime_and_a_missing_decision_fail(tmp_path: Path) -> None:
    s = parse(_edited(tmp_path, "repeat_offender.txt", "bantime=240 offence=3", "bantime=480 offence=3"))
    (tmp_path / "a").mkdir()
    with pytest.raises(ScenarioMismatch, match="bantime=480 offence=3"):
        check(s, run(s, tmp_path / "a"))
    s = parse(_edited(tmp_path, "ban_then_unban.txt", "--- until 1700001000", "--- until 1700000059"))
    (tmp_path / "b").mkdir()
    with pytest.raises(ScenarioMismatch, match="the run ended before it"):
        check(s, run(s, tmp_path / "b"))


@pytest.mark.parametrize(("text", "error"), [
    ("--- records\n{\"PS_EVENT\": \"scan\"}\n--- expect\n", ":2: record without its own time"),
    ("--- records\n{\"PS_TIME\": \"5\"}\n{\"PS_TIME\": \"4\"}\n--- expect\n", ":3: time 4 before the previous"),
    ("--- jail\n[scan]\naction = nftables\n--- records\n--- expect\n", "the runner sets every jail's action"),
    ("--- records\n--- expect\n5 banned scan 192.0.2.1\n", ":3: expected 'TIME ban|unban|"),
    ("--- host\nfriend 192.0.2.1\n", ":2: expected 'own|gateway|resolver ADDRESS'"),
    ("--- records\nrestart soon\n--- expect\n", ":2: expected 'restart SECONDS'"),
    ("stray text\n", ":1: text outside a section"),
    ("--- expect\n", "needs a '--- records' and an '--- expect' section"),
])
def test_a_scenario_file_that_cannot_run_is_refused_with_its_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=error.replace("|", r"\|").replace("(", r"\(")):
        parse(path)
