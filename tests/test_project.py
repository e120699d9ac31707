"""The project's own consistency: pins, the table of contents, stored chapter outputs, citations."""

import json
import pathlib
import re
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def pins(lines):
    """{name: version} from requirement lines of the form name==version."""
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)\s*", line)
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_direct_dependencies_are_pinned_and_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["book"] + project["optional-dependencies"]["triton"]
    direct_pins = pins(direct)
    assert len(direct_pins) == len(direct), "every direct dependency must be pinned with =="
    assert direct_pins["torch"] == "2.13.0"
    locked = pins((ROOT / "requirements.lock").read_text().splitlines())
    for name, version in direct_pins.items():
        assert locked.get(name) == version, f"{name}: pyproject pins {version}, requirements.lock {locked.get(name)}"
    assert "+" not in locked["torch"], "lock the public version; a local build tag does not install elsewhere"


def test_conda_environment_is_the_same_environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert project["requires-python"] == ">=3.11,<3.12" and python == "python=3.11"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-c requirements.lock",
                           "-e .[book]"]


def test_every_chapter_is_in_the_table_of_contents_and_vice_versa():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f
    assert {f"book/{nb.stem}" for nb in CHAPTERS} <= set(files)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_stored_outputs_and_no_errors(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "a chapter without code"
    for cell in code:
        source = "".join(cell["source"])
        assert cell["execution_count"] is not None, f"no stored run: {source[:60]!r}"
        assert cell["outputs"], f"no stored output, so nbval compares nothing: {source[:60]!r}"
        assert all(o["output_type"] != "error" for o in cell["outputs"]), f"stored error: {source[:60]!r}"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were not run top to bottom in one kernel"


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
    sources = [p.read_text() for p in (ROOT / "book").glob("*.md")] + [p.read_text() for p in CHAPTERS]
    cited = {key.strip() for text in sources for group in re.findall(r"\{cite[:a-z]*\}`([^`]+)`", text)
             for key in group.split(",")}
    assert cited, "no citations found"
    assert cited <= keys, f"cited but missing from references.bib: {sorted(cited - keys)}"
