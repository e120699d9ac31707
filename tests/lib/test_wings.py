"""The two wings: the loss library never imports the book's lab."""

import ast
import pathlib
import subprocess
import sys

import dmcore

PACKAGE = pathlib.Path(dmcore.__file__).parent
LIBRARY_FILES = sorted(p for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts
                       and p.name != "__main__.py")


def _imports(path: pathlib.Path) -> list[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    package = ".".join(("dmcore",) + path.relative_to(PACKAGE).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_the_library_files_are_the_ones_the_package_names():
    assert {p.stem for p in LIBRARY_FILES if p.parent == PACKAGE} == {*dmcore.LIBRARY, "__init__"} - {"kernels"}
    assert (PACKAGE / "kernels" / "__init__.py") in LIBRARY_FILES


def test_no_library_module_imports_the_lab():
    offenders = {p.relative_to(PACKAGE).as_posix(): [n for n in _imports(p) if n.startswith("dmcore.lab")]
                 for p in LIBRARY_FILES}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_checker_sees_a_relative_import_of_the_lab(tmp_path):
    """The check above can fail: a library file that reaches into the lab is caught, however it is written."""
    for text in ("from .lab import train\n", "from . import lab\n", "import dmcore.lab.sweep\n",
                 "def f():\n    from .lab.records import Stat\n"):
        fake = PACKAGE / "_wings_probe.py"
        try:
            fake.write_text(text)
            assert any(n.startswith("dmcore.lab") for n in _imports(fake)), text
        finally:
            fake.unlink()


def test_using_the_losses_loads_nothing_of_the_lab():
    code = ("import sys, torch\n"
            "from dmcore import edf, losses, symbolic, targets\n"
            "x, y = torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1])\n"
            "for impl in ('torch', 'auto'):\n"
            "    losses.DMLoss(impl=impl)(x, y).backward()\n"
            "losses.from_name('gce:q=0.5')(x, y).backward()\n"
            "symbolic.derivative_magnitude('gce')\n"
            "print(sorted(m for m in sys.modules if m.startswith('dmcore.lab')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
