"""Set up a chapter opened on Google Colab: install dmcore, import it from the clone, run in the book.

Colab opens a chapter's notebook alone, straight from GitHub, without the repository around it, so
nothing of the repository can run before something has cloned it. Every chapter's first cell
therefore starts with the same two-line guard, and this script is the only place that says what
the set-up does:

    import sys

    if "google.colab" in sys.modules:  # opened alone on Colab: clone the book, then set it up
        !git clone --quiet --depth 1 https://github.com/dmcore/dmcore /content/dmcore
        %run /content/dmcore/tools/colab.py

Anywhere else (Jupyter, Binder, nbval, the book's build) the guard is false and nothing happens:
the chapter imports the dmcore installed in its environment and runs in the book's folder.

On Colab, ``%run`` executes this file in the notebook's own kernel, so that what it changes holds
for the cells that follow: it installs the clone with its ``book`` extra (editable, with the
pinned dependencies) and the Fashion-MNIST package (``tools/install_fashion_mnist.sh``), puts the
clone first on ``sys.path`` (an editable install is picked up by a
new interpreter, not by the running kernel), and moves to ``book/``, where the chapters find their
records (``records/``) and the papers' tables (``data/paper/``).
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[book]"], check=True)
    # Fashion-MNIST's images from the distribution's package; where that fails, the chapters that read
    # them stop with an error naming the package
    subprocess.run(["bash", str(ROOT / "tools" / "install_fashion_mnist.sh")], check=False)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.chdir(ROOT / "book")
    print(f"dmcore installed from {ROOT}; working in {ROOT / 'book'}")


if __name__ == "__main__":
    main()
