"""The papers' published tables, as the book keeps them: ``book/data/paper/*.csv``.

Each file is a CSV table transcribed from the IMAE or DM paper, preceded by the paper's caption and
the book's notes on reading it as lines starting with ``#``. :func:`read` is the one reader: it
skips those lines and returns the rows as dictionaries of strings (a missing cell is ``""``), so
that a chapter converts exactly the numbers it uses.

The folder is found like the records' (:func:`dmcore.lab.records.folder`): an argument, else
``DMCORE_PAPERS``, else ``book/data/paper`` or ``data/paper`` under the current directory (a
checkout's root, or the book's folder where the chapters run).

    >>> rows = read("cifar10_resnet56_dm_table9.csv", noise="0.6")     # doctest: +SKIP
    >>> [(r["method"], r["final_test"]) for r in rows]                  # doctest: +SKIP
    [('CCE', '37.2'), ('DM', '72.5')]
"""

from __future__ import annotations

import csv
import os
import pathlib

__all__ = ["folder", "names", "read", "caption"]


def folder(path=None) -> pathlib.Path:
    """The folder of the papers' tables: ``path`` if given, else ``DMCORE_PAPERS``, else
    ``book/data/paper`` or ``data/paper`` under the current directory."""
    if path is not None:
        return pathlib.Path(path)
    if os.environ.get("DMCORE_PAPERS"):
        return pathlib.Path(os.environ["DMCORE_PAPERS"])
    for candidate in (pathlib.Path("book") / "data" / "paper", pathlib.Path("data") / "paper"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no folder of the papers' tables: pass one, set DMCORE_PAPERS, or run from a "
                            f"checkout's root or its book folder (the current directory is {os.getcwd()})")


def names(path=None) -> list[str]:
    """The tables' file names, sorted."""
    return sorted(p.name for p in folder(path).glob("*.csv"))


def _lines(name: str, path=None) -> list[str]:
    file = folder(path) / name
    if file.suffix != ".csv" or not file.is_file():
        raise FileNotFoundError(f"no table {name!r} in {folder(path)}; the tables are {names(path)}")
    return file.read_text(encoding="utf-8").splitlines()


def caption(name: str, path=None) -> str:
    """The leading ``#`` lines of a table (the paper's caption and the book's notes), without the ``#``."""
    lines = []
    for line in _lines(name, path):
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


def read(name: str, path=None, **match) -> list[dict[str, str]]:
    """The rows of the table ``name`` (e.g. ``"cifar10_resnet56_dm_table9.csv"``), as dictionaries
    of strings, in the file's order; ``match`` keeps the rows whose columns equal the given strings.

    Raises ``KeyError`` for a column the table does not have."""
    rows = list(csv.DictReader(line for line in _lines(name, path) if not line.startswith("#")))
    columns = set(rows[0]) if rows else set()
    unknown = set(match) - columns
    if unknown:
        raise KeyError(f"{name} has no column {sorted(unknown)}; its columns are {sorted(columns)}")
    return [row for row in rows if all(row[k] == v for k, v in match.items())]
