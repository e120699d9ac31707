"""Write a copy of the book's _config.yml that renders the stored outputs instead of executing.

Used by `make test`: nbval has just re-executed every chapter and compared it with its stored
outputs, so the strict build checks the pages exactly as they are stored in the repository.
Jupyter Book resolves the paths of local Sphinx extensions from the configuration file's folder,
so the copy points them back to the book's own.

    python tools/stored_config.py _config.yml _build/stored/_config.yml
"""

import os
import pathlib
import sys

import yaml

source, target = map(pathlib.Path, sys.argv[1:3])
config = yaml.safe_load(source.read_text())
config.setdefault("execute", {})["execute_notebooks"] = "off"
extensions = config.get("sphinx", {}).get("local_extensions") or {}
for name, path in extensions.items():
    extensions[name] = os.path.relpath(source.resolve().parent / path, target.resolve().parent)
target.parent.mkdir(parents=True, exist_ok=True)
target.write_text(yaml.safe_dump(config, sort_keys=False))
print(f"{target}: execute_notebooks = off")
