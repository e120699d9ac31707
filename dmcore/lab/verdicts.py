"""A chapter's claim checks, gathered into one verdict table.

A chapter states each finding, with its criterion, before the evidence; its visible cells compute
and show the evidence; one folded cell near its end registers every check with a :class:`Verdicts`,
shows the table and calls :meth:`Verdicts.assert_all`, so that a broken claim fails the chapter's
test (nbval re-executes the chapter) while the reader sees a table rather than a column of asserts.

Each row names the finding, states the criterion in words, gives the measured value as a string
the chapter formats itself (an explicit format, so that the stored output is the same on every
run), and the boolean the criterion evaluates to. Evidence against a finding, where the chapter
has some, goes beside its row and is listed under the table.

    >>> v = Verdicts()
    >>> v.check("L1. CCE memorises", "noisy fit above 0.45", f"{0.5623:.3f}", 0.5623 > 0.45)
    True
    >>> print(v.table())
    | finding | criterion | measured | verdict |
    |---|---|---|---|
    | L1. CCE memorises | noisy fit above 0.45 | 0.562 | holds |
    >>> v.assert_all()
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Verdict", "Verdicts", "decade"]

HOLDS, FAILS = "holds", "fails"


@dataclass(frozen=True)
class Verdict:
    """One row of the table: a finding, its criterion, the measured value and whether it holds."""

    finding: str
    criterion: str
    measured: str
    ok: bool
    against: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return HOLDS if self.ok else FAILS

    def __str__(self) -> str:
        return f"{self.finding}: {self.criterion}; measured {self.measured}: {self.verdict}"


def decade(x: float) -> str:
    """A rounding error as the power of ten it lies below (``"< 1e-14"``; ``"0"`` for zero).

    A measured value at the level of floating-point rounding differs in its last digits between
    machines (vector width, kernel path); shown as its decade, it reads the same on each of them.

        >>> decade(1.4e-14), decade(0.0), decade(-3e-7), decade(1e-13)
        ('< 1e-13', '0', '< 1e-6', '< 1e-12')
    """
    x = abs(float(x))
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"< 1e{math.floor(math.log10(x)) + 1}"


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string formatted by the chapter (an explicit format), "
                        f"got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    if "\n" in value:
        raise ValueError(f"{name} must be one line, got {value!r}")
    return value


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


class Verdicts:
    """The checks of one chapter, in the order the chapter registers them."""

    HEADER = ("finding", "criterion", "measured", "verdict")

    def __init__(self):
        self.rows: list[Verdict] = []

    def check(self, finding: str, criterion: str, measured: str, ok, against=()) -> bool:
        """Register a check and return its outcome.

        ``measured`` is a string: the chapter formats its numbers itself. ``ok`` is a ``bool`` (a
        NumPy boolean is accepted), never a number or a tensor whose truth would be implicit.
        ``against``: evidence against the finding (a string or strings), listed under the table."""
        if isinstance(ok, np.bool_):
            ok = bool(ok)
        if not isinstance(ok, bool):
            raise TypeError(f"the outcome of {finding!r} must be a bool, got {type(ok).__name__} {ok!r}")
        against = (against,) if isinstance(against, str) else tuple(against)
        row = Verdict(_text("finding", finding), _text("criterion", criterion),
                      _text("measured", measured), ok, tuple(_text("against", a) for a in against))
        self.rows.append(row)
        return ok

    def reproduced(self, check) -> bool:
        """Register a re-training check (:func:`dmcore.lab.reproduce.reproduce`'s outcome): the
        sample of the record trained again matches it, bit for bit where the arithmetic is the
        record's, else within the spread over seeds. Its table depends on the machine; this row does
        not."""
        return self.check(f"The record `{check.experiment}` reproduces",
                          "the re-trained sample within the rule of dmcore.lab.reproduce",
                          f"runs re-trained: {len(check.modes)}; values outside: {len(check.failures)}",
                          bool(check.passed))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def failures(self) -> list[Verdict]:
        return [row for row in self.rows if not row.ok]

    def table(self) -> str:
        """The rows as a Markdown table (a finding checked by several criteria named on its first
        row only; a failing row's verdict in bold), then the evidence against any finding, as a list."""
        if not self.rows:
            raise ValueError("no checks registered")
        lines = ["| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        previous = None
        for row in self.rows:
            verdict = row.verdict if row.ok else f"**{row.verdict}**"
            finding = "" if row.finding == previous else _cell(row.finding)
            previous = row.finding
            lines.append("| " + " | ".join([finding] + [_cell(c) for c in (row.criterion, row.measured, verdict)])
                         + " |")
        against = [(row.finding, a) for row in self.rows for a in row.against]
        if against:
            lines += ["", "Evidence against:", ""] + [f"- {finding}: {a}" for finding, a in against]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many checks hold."""
        return f"{len(self.rows) - len(self.failures)} of {len(self.rows)} checks hold"

    def assert_all(self) -> None:
        """Raise an ``AssertionError`` naming every failing row, with its criterion and measured value."""
        if not self.rows:
            raise AssertionError("no checks registered")
        failing = self.failures
        if failing:
            raise AssertionError(f"{len(failing)} of {len(self.rows)} checks fail:\n"
                                 + "\n".join(f"- {row}" for row in failing))
