"""The chapters show the idea, not the checks: short visible code, claim checks in one folded verdict
table per chapter, and one definition of the Colab set-up."""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
COLAB = ROOT / "tools" / "colab.py"
WIDTH = 88
FOLDED = {"hide-input", "remove-input", "remove-cell"}


def _code(chapter):
    return [c for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code"]


def _visible(cell) -> bool:
    return not FOLDED & set(cell["metadata"].get("tags", []))


def _guard() -> str:
    """The first cell's Colab guard, as the set-up script's docstring gives it."""
    doc = COLAB.read_text().split('"""')[1]
    block = doc.split("\n\n    import sys\n\n", 1)[1].split("\n\n", 1)[0]
    lines = ["import sys", ""] + [line[4:] for line in block.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_visible_code_lines_fit_the_column(chapter):
    long = [(i, line) for i, cell in enumerate(_code(chapter)) if _visible(cell)
            for line in "".join(cell["source"]).splitlines() if len(line) > WIDTH]
    assert not long, f"visible code lines over {WIDTH} characters (code cell, line): {long}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_no_dunder_import(chapter):
    assert not [c for c in _code(chapter) if "__import__(" in "".join(c["source"])]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_no_visible_assert(chapter):
    """Claim checks go to the chapter's verdict table; set-up checks to folded cells."""
    visible = [i for i, c in enumerate(_code(chapter)) if _visible(c)
               and re.search(r"^\s*assert\b|\.assert_all\(", "".join(c["source"]), re.M)]
    assert not visible, f"code cells {visible} assert in sight of the reader"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_one_verdict_table_asserted_in_a_folded_cell(chapter):
    cells = [c for c in _code(chapter) if "Verdicts()" in "".join(c["source"])]
    assert len(cells) == 1, "one verdict table per chapter"
    (cell,) = cells
    source = "".join(cell["source"])
    assert "hide-input" in cell["metadata"].get("tags", []) and ".assert_all()" in source
    shown = [o["data"]["text/markdown"] for o in cell["outputs"] if "text/markdown" in o.get("data", {})]
    assert any("".join(t).startswith("| finding | criterion | measured | verdict |") for t in shown), \
        "the verdict table is not shown"


def test_the_colab_setup_is_defined_once():
    guard = _guard()
    assert "git clone" in guard and "%run /content/dmcore/tools/colab.py" in guard
    for chapter in CHAPTERS:
        first = "".join(_code(chapter)[0]["source"])
        assert first.startswith(guard), f"{chapter.name}: the first cell does not start with the guard"
        code = "\n".join("".join(c["source"]) for c in _code(chapter))
        assert code.count("google.colab") == 1 and code.count("git clone") == 1, chapter.name
        for setup in ("pip install", "sys.path.insert", "%cd", "os.chdir"):
            assert setup not in code, f"{chapter.name} sets itself up ({setup!r}): tools/colab.py does that"


def test_the_style_checks_can_fail(tmp_path):
    """The checks above see what they are meant to see."""
    long = {"cell_type": "code", "metadata": {}, "source": ["x = 1" + " " * WIDTH + "# long\n"]}
    folded = {**long, "metadata": {"tags": ["hide-input"]}}
    assert _visible(long) and not _visible(folded)
    assert "%pip install" not in _guard() and _guard().count("\n") == 5
