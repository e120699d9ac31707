"""Pre-registered criteria: each claim's test, written down and committed before its record is trained.

A record's criteria live in ``book/criteria/<record>.toml`` (read with :func:`load`): the analysis every
verdict follows (metric, checkpoint rules, selection, test, correction, margin) and, for each claim or
finding, what is compared and when it holds, partly holds or does not hold. When
:func:`dmcore.lab.experiments.run` trains the record it stores the file's SHA-256 in the record's
provenance, from a commit that includes the file unmodified (``+modified`` counts the criteria).
:func:`check_unchanged` is the proof that the criteria came first: every training session of the record
was a clean commit, stored the digest of today's file, and, where the repository's history is at hand,
that commit holds today's file byte for byte.

Example::

    >>> from dmcore.lab import criteria
    >>> plan = criteria.load("label-noise-fair")
    >>> plan["analysis"]["judged"], plan["analysis"]["correction"]
    (['final', 'early'], 'holm')
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tomllib

from . import records

__all__ = ["folder", "path", "load", "named", "claims", "check_unchanged"]


def folder(records_folder=None) -> pathlib.Path:
    """The folder of criteria: ``criteria`` beside the folder of records (:func:`dmcore.lab.records.folder`)."""
    return records.folder(records_folder).parent / "criteria"


def path(name: str, records_folder=None) -> pathlib.Path:
    """The criteria file of record ``name``: ``<name>.toml``, or the file that lists ``name`` among its
    ``records`` (:func:`dmcore.lab.records.criteria_file`)."""
    file = records.criteria_file(name, folder(records_folder))
    if file is None:
        raise FileNotFoundError(f"record {name!r} has no pre-registered criteria (no {name}.toml in "
                                f"{folder(records_folder)}, and no file there lists it among its records)")
    return file


def load(name: str, records_folder=None, addenda: bool = True) -> dict:
    """The criteria of record ``name`` as a dict (TOML), with its addenda applied in order (``addenda``):
    an addendum's tables update the plan's tables key by key, its claims replace those of the same id,
    and ``plan["addenda"]`` lists the files applied."""
    file = path(name, records_folder)
    plan = tomllib.loads(file.read_text())
    if name != plan.get("record") and name not in plan.get("records", []):
        raise ValueError(f"{file} names the records {plan.get('record') or plan.get('records')!r}, not {name!r}")
    plan["addenda"] = []
    for extra in records.criteria_addenda(name, folder(records_folder)) if addenda else []:
        plan = _amend(plan, tomllib.loads(extra.read_text()), file.name, extra)
    return plan


def _amend(plan: dict, addendum: dict, base: str, where: pathlib.Path) -> dict:
    """``plan`` with ``addendum`` (of file ``where``) applied."""
    if addendum["amends"] != base:
        raise ValueError(f"{where} amends {addendum['amends']!r}, but the record's criteria are {base!r}")
    plan = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in plan.items()}
    for key, value in addendum.items():
        if key in ("amends", "records"):
            continue
        if key in ("claim", "finding"):
            ids = {c["id"] for c in value}
            plan[key] = [c for c in plan.get(key, []) if c["id"] not in ids] + list(value)
        elif isinstance(value, dict):
            plan[key] = {**plan.get(key, {}), **value}
        else:
            plan[key] = value
    plan["addenda"].append(where.name)
    return plan


def named(records_folder=None) -> list[str]:
    """Every record that has pre-registered criteria, in the files' order (addenda name no new ones)."""
    names = []
    for file in sorted(folder(records_folder).glob("*.toml")):
        plan = tomllib.loads(file.read_text())
        if "amends" not in plan:
            names += [plan["record"]] if "record" in plan else list(plan.get("records", []))
    return names


def claims(plan: dict) -> dict[str, dict]:
    """The claims and findings of a plan by id, in the file's order."""
    return {c["id"]: c for c in plan.get("claim", []) + plan.get("finding", [])}


def _text_at(commit: str, file: pathlib.Path) -> bytes | None:
    """``file`` as it was at ``commit`` of its repository (None where git or the commit is not at hand)."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=file.parent, capture_output=True, text=True,
                             timeout=30)
        if top.returncode != 0:
            return None
        relative = file.resolve().relative_to(pathlib.Path(top.stdout.strip()).resolve()).as_posix()
        shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=file.parent, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return shown.stdout if shown.returncode == 0 else None


def check_unchanged(name: str, records_folder=None, history: bool = True) -> list[str]:
    """Why the criteria of record ``name`` cannot be shown to predate it (an empty list where they can):
    a training session from modified code, one without the criteria's digest or with another digest than
    today's file, or (``history``) a session's commit whose copy of the file differs from today's. For
    each addendum: no session stored it, a session stored another digest than today's file, a session
    after the first that stored it did not, or (``history``) a storing session's commit holds another
    copy of it."""
    file = path(name, records_folder)
    sessions = json.loads((records.folder(records_folder) / name / "provenance.json").read_text())
    problems = _check_file(file, sessions, lambda s: s.get("criteria_sha256"), history)
    for extra in records.criteria_addenda(name, folder(records_folder)):
        stored = [s for s in sessions if extra.name in s.get("addenda_sha256", {})]
        if not stored:
            problems.append(f"no training session stored the addendum {extra.name}: its runs are not shown to follow it")
            continue
        first = sessions.index(stored[0])
        problems += [f"session of {s['date']} trained after the addendum {extra.name} took effect without storing it"
                     for s in sessions[first:] if s not in stored]
        problems += _check_file(extra, stored, lambda s: s["addenda_sha256"][extra.name], history)
    return problems


def _check_file(file: pathlib.Path, sessions: list[dict], stored, history: bool) -> list[str]:
    """The problems of ``sessions`` with one criteria file (``stored(session)``: the digest it stored)."""
    today = file.read_bytes()
    digest = records.criteria_digest(file)
    problems = []
    for s in sessions:
        commit = s["dmcore_commit"]
        if commit.endswith("+modified") or commit == "unknown":
            problems.append(f"session of {s['date']} trained from {commit}: not a committed state")
            continue
        if stored(s) != digest:
            problems.append(f"session of {s['date']} stored {file.name}'s digest as {stored(s)}, today's file has {digest}")
        if history:
            then = _text_at(commit, file)
            if then is None:
                problems.append(f"commit {commit[:10]} of the session of {s['date']} is not in this repository's history "
                                f"or holds no {file.name}")
            elif then != today:
                problems.append(f"{file.name} changed after commit {commit[:10]}, which trained the session of {s['date']}")
    return problems
