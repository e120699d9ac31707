"""Fixtures shared by the two wings' tests (tests/lib, tests/lab) and the book's (tests/book)."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    """The checkout's root."""
    return ROOT
