"""Execute chapters in place and store their outputs, as nbval will re-run and compare them.

    python tools/store_outputs.py book/some_chapter.ipynb [...]

Cells run in the chapter's own kernel with its working directory set to the chapter's folder.
No timing metadata is written, so an unchanged chapter re-executes to an unchanged file.
"""

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

for name in sys.argv[1:]:
    path = pathlib.Path(name)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    print(f"stored outputs of {path}")
