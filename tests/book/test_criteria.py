"""Pre-registered criteria: each criteria file older than the record it judges, and the checker able to fail."""

import json
import pathlib
import shutil
import subprocess

import pytest

from dmcore.lab import criteria, experiments, records

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECORDS = ROOT / "book" / "records"
NAMED = criteria.named(RECORDS)


def test_the_verdict_records_have_criteria():
    names = set(NAMED)
    assert {"label-noise-fair", experiments.map_name(2, 25)} <= names and len(names) == len(NAMED)
    for name in names:
        assert name in experiments.EXPERIMENTS, f"criteria for an unknown record: {name}"
        plan = criteria.load(name, ROOT / "book" / "records")
        assert set(plan["analysis"]["judged"]) <= set(records.RULES) and plan["analysis"]["judged"]
        assert all({"id", "text", "compare", "holds", "does_not_hold"} <= set(c) for c in criteria.claims(plan).values())


@pytest.mark.parametrize("name", NAMED)
def test_criteria_are_unchanged_since_their_record_was_trained(name):
    if not (RECORDS / name).is_dir():
        pytest.skip(f"{name} is not trained yet: its criteria have no record to predate")
    assert criteria.check_unchanged(name, RECORDS) == []


def test_one_plan_can_judge_several_records(tmp_path):
    (tmp_path / "criteria").mkdir()
    (tmp_path / "criteria" / "map.toml").write_text('records = ["cell-a", "cell-b"]\n[analysis]\njudged = ["final"]\n')
    (tmp_path / "criteria" / "solo.toml").write_text('record = "solo"\n')
    assert criteria.named(tmp_path / "records") == ["cell-a", "cell-b", "solo"]
    assert criteria.path("cell-b", tmp_path / "records").name == "map.toml"
    assert criteria.load("cell-a", tmp_path / "records")["analysis"]["judged"] == ["final"]
    with pytest.raises(FileNotFoundError, match="cell-c"):
        criteria.path("cell-c", tmp_path / "records")


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_the_check_fails_when_a_criterion_changed_after_the_record(tmp_path):
    """A repository where the criteria were committed, a record trained from that commit, and the
    criteria edited afterwards: the digest and the history both tell."""
    (tmp_path / "book" / "criteria").mkdir(parents=True)
    (tmp_path / "book" / "records" / "demo").mkdir(parents=True)
    plan = tmp_path / "book" / "criteria" / "demo.toml"
    plan.write_text('record = "demo"\n[analysis]\njudged = ["final"]\n')
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", "book")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "criteria")
    commit = _git(tmp_path, "rev-parse", "HEAD")
    session = {"dmcore_commit": commit, "date": "2026-12-03 11:00 UTC", "criteria_sha256": records.criteria_digest(plan)}
    provenance = tmp_path / "book" / "records" / "demo" / "provenance.json"
    provenance.write_text(json.dumps([session]))
    assert criteria.check_unchanged("demo", tmp_path / "book" / "records") == []
    plan.write_text('record = "demo"\n[analysis]\njudged = ["best"]\n')
    problems = criteria.check_unchanged("demo", tmp_path / "book" / "records")
    assert len(problems) == 2 and "digest" in problems[0] and "changed after commit" in problems[1]
    provenance.write_text(json.dumps([{**session, "dmcore_commit": commit + "+modified"}]))
    assert "not a committed state" in criteria.check_unchanged("demo", tmp_path / "book" / "records")[0]
    shutil.rmtree(tmp_path / ".git")
    provenance.write_text(json.dumps([{**session, "criteria_sha256": records.criteria_digest(plan)}]))
    assert "not in this repository's history" in criteria.check_unchanged("demo", tmp_path / "book" / "records")[0]


def test_an_addendum_is_checked_against_the_sessions_trained_under_it(tmp_path):
    """Base criteria, a session from their commit; an addendum committed later and a session that
    stores it: the check passes, and fails when the addendum is edited, when a later session forgets it,
    or when no session stored it."""
    (tmp_path / "book" / "criteria").mkdir(parents=True)
    (tmp_path / "book" / "records" / "demo").mkdir(parents=True)
    base, extra = tmp_path / "book" / "criteria" / "demo.toml", tmp_path / "book" / "criteria" / "demo-more.toml"
    base.write_text('record = "demo"\n[analysis]\njudged = ["final"]\nnoisy = [0.4]\n')
    git = ("-c", "user.name=t", "-c", "user.email=t@t")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, *git, "add", "book")
    _git(tmp_path, *git, "commit", "-qm", "criteria")
    first = {"dmcore_commit": _git(tmp_path, "rev-parse", "HEAD"), "date": "d1", "criteria_sha256": records.criteria_digest(base)}
    extra.write_text('amends = "demo.toml"\nrecords = ["demo"]\n[analysis]\nnoisy = [0.4, 0.6]\n')
    _git(tmp_path, *git, "add", "book")
    _git(tmp_path, *git, "commit", "-qm", "addendum")
    second = {**first, "dmcore_commit": _git(tmp_path, "rev-parse", "HEAD"), "date": "d2",
              "addenda_sha256": {"demo-more.toml": records.criteria_digest(extra)}}
    folder = tmp_path / "book" / "records"
    provenance = folder / "demo" / "provenance.json"
    assert criteria.named(folder) == ["demo"]                          # an addendum names no new record
    plan = criteria.load("demo", folder)
    assert plan["analysis"] == {"judged": ["final"], "noisy": [0.4, 0.6]} and plan["addenda"] == ["demo-more.toml"]
    assert criteria.load("demo", folder, addenda=False)["analysis"]["noisy"] == [0.4]
    provenance.write_text(json.dumps([first]))
    assert "no training session stored the addendum" in criteria.check_unchanged("demo", folder)[0]
    provenance.write_text(json.dumps([first, second]))
    assert criteria.check_unchanged("demo", folder) == []
    provenance.write_text(json.dumps([first, second, {**second, "date": "d3", "addenda_sha256": {}}]))
    assert "without storing it" in criteria.check_unchanged("demo", folder)[0]
    provenance.write_text(json.dumps([first, second]))
    extra.write_text('amends = "demo.toml"\nrecords = ["demo"]\n[analysis]\nnoisy = [0.6]\n')
    problems = criteria.check_unchanged("demo", folder)
    assert len(problems) == 2 and "demo-more.toml's digest" in problems[0] and "demo-more.toml changed after" in problems[1]
