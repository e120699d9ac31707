"""Pre-registered criteria: each criteria file older than the record it judges, and the checker able to fail."""

import json
import pathlib
import shutil
import subprocess

import pytest

from dmcore.lab import criteria, experiments, records

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "book" / "criteria").glob("*.toml"))


def test_the_verdict_records_have_criteria():
    names = {f.stem for f in FILES}
    assert "label-noise-fair" in names
    for name in names:
        assert name in experiments.EXPERIMENTS, f"criteria for an unknown record: {name}"
        plan = criteria.load(name, ROOT / "book" / "records")
        assert set(plan["analysis"]["judged"]) <= set(records.RULES) and plan["analysis"]["judged"]
        assert all({"id", "text", "compare", "holds", "does_not_hold"} <= set(c) for c in criteria.claims(plan).values())


@pytest.mark.parametrize("file", FILES, ids=[f.stem for f in FILES])
def test_criteria_are_unchanged_since_their_record_was_trained(file):
    folder = ROOT / "book" / "records" / file.stem
    if not folder.is_dir():
        pytest.skip(f"{file.stem} is not trained yet: its criteria have no record to predate")
    assert criteria.check_unchanged(file.stem, ROOT / "book" / "records") == []


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
