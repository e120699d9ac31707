"""The README's promises to a newcomer: its first example runs, and its layout names real files."""

import re

import torch

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_first_example_trains_within_the_first_screen():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    first = blocks[0]
    assert README.index(first) < len("\n".join(README.splitlines()[:40])), "the example is below the first screen"
    assert len(first.strip().splitlines()) <= 12
    namespace = {}
    torch.manual_seed(0)
    exec(compile(first, "README.md", "exec"), namespace)
    assert torch.isfinite(namespace["loss"]) and namespace["model"].weight.grad is not None


def test_the_layout_tree_names_files_that_exist():
    tree = re.search(r"## Layout\n\n```\n(.*?)```", README, re.S).group(1)
    parent = None
    for line in tree.splitlines():
        name = line.split()[0].rstrip(",")
        if len(line) - len(line.lstrip()) > 8 or not ("." in name or name.endswith("/")):
            continue                                                  # a description's second line
        if not line.startswith(" "):
            parent = name if name.endswith("/") and not name.startswith("tests") else None
            path = ROOT / name.split(",")[0]
        else:
            path = ROOT / (parent or "") / name
        assert path.exists(), f"README's layout names {path.relative_to(ROOT)}, which does not exist"
