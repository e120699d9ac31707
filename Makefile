# The project's two commands (README.md):
#   make book   set up .venv if needed, execute every chapter and render the HTML book to _build/html
#   make test   unit tests, nbval over every chapter, and a strict build of the stored outputs
# `make outputs` re-executes the chapters in place and stores their outputs (for authors).

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/*.ipynb))

# The kernels the chapters run in must be this environment's python, and use a fixed thread count.
export PATH := $(BIN):$(PATH)
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PYTHONHASHSEED := 0

.PHONY: book test outputs env clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[book]"
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html
	@echo "The book is at _build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest tests $(CHAPTERS) --nbval --nbval-current-env \
		--nbval-sanitize-with book/sanitize.cfg --nbval-cell-timeout=1200
	$(BIN)/python tools/stored_config.py _config.yml _build/stored/_config.yml
	$(BIN)/jupyter-book build . --config _build/stored/_config.yml --path-output _build/stored \
		-n -W --keep-going --builder html

outputs: $(STAMP)
	$(BIN)/python tools/store_outputs.py $(CHAPTERS)

clean:
	rm -rf _build
