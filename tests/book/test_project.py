"""The project's own consistency: pins, the table of contents, stored chapter outputs, citations."""

import json
import pathlib
import re
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
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


def test_the_publishing_workflow_builds_with_the_test_command_and_deploys_from_main(tmp_path):
    import shutil
    import subprocess
    import sys

    path = ROOT / ".github" / "workflows" / "book.yml"
    flow = yaml.safe_load(path.read_text())
    triggers = flow[True] if True in flow else flow["on"]          # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    assert any(step.get("run") == "make test" for step in build["steps"])
    uploads = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    assert "refs/heads/main" in deploy["if"] and deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    lint = shutil.which("check-jsonschema", path=str(pathlib.Path(sys.executable).parent))
    if lint is None:
        pytest.skip("check-jsonschema is installed with the book extra")
    command = [lint, "--builtin-schema", "vendor.github-workflows"]
    assert subprocess.run(command + [str(path)], capture_output=True).returncode == 0
    broken = tmp_path / "broken.yml"
    broken.write_text(path.read_text().replace("runs-on: ubuntu-24.04\n    # Debian", "# Debian", 1))
    assert subprocess.run(command + [str(broken)], capture_output=True).returncode != 0   # the check can fail


def test_citation_file():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] and citation["authors"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert citation["version"] == project["version"]
    assert {r["identifiers"][0]["value"] for r in citation["references"]} == {"arXiv:1903.12141", "arXiv:1905.11233"}


def test_every_record_a_chapter_reads_has_its_provenance_on_the_page():
    """Each evidence page prints, from the records, when, where and by which code its runs were made."""
    for chapter in CHAPTERS:
        cells = json.loads(chapter.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        loaded = set()
        for name in re.findall(r'experiments\.load\(f?"([^"]+)"', source):
            loaded |= {name.replace("{ratio}", r) for r in ("10", "50")} if "{ratio}" in name else {name}
        shown = "\n".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
        for name in loaded:
            match = re.search(rf"Record `{re.escape(name)}`: \d+ runs trained on \d{{4}}-\d\d-\d\d on .+, dmcore "
                              rf"[0-9a-f]{{10}}.*, in [0-9.]+ min; regenerate with `python -m dmcore experiments {name}`",
                              shown)
            assert match, f"{chapter.name} reads the record {name} without showing its provenance"


def test_setup_and_plumbing_cells_are_folded():
    """The reader opens plumbing on demand: each chapter's set-up cell (imports, the Colab guard) is folded,
    and so is every cell that neither derives nor trains (claim checks are folded too: the verdict table,
    tests/book/test_chapter_style.py)."""
    keep = re.compile(r"symbolic\.|sp\.(diff|simplify|symbols|solve)|implied_loss\(|train_runs|reproduce\(|\.backward\(|"
                      r"autograd\.grad|losses\.\w+Loss\(", re.M)
    for chapter in CHAPTERS:
        code = [c for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code"]
        folded = lambda c: "hide-input" in c["metadata"].get("tags", [])
        assert folded(code[0]), f"{chapter.name}: the set-up cell is not folded"
        plumbing = [c for c in code if not keep.search("".join(c["source"]))]
        assert all(folded(c) for c in plumbing), f"{chapter.name}: a plumbing cell is visible"
