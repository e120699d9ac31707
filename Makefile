# The project's two commands (README.md):
#   make book   set up .venv if needed, execute every chapter and render the HTML book to _build/html
#   make test   the publishing workflow checked against GitHub's schema, unit tests, nbval over every
#               chapter, a strict build of the stored outputs to _build/html, and every page of it
#               checked in headless Chromium
# Both install Debian's dataset-fashion-mnist first when its files are missing (root or sudo).
# `make outputs` re-executes the chapters in place and stores their outputs (for authors).

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
TRITON := $(VENV)/.triton
MATHJAX := _build/mathjax/mathjax/tex-mml-chtml.js
CHAPTERS := $(sort $(wildcard book/*.ipynb))

# The kernels the chapters run in must be this environment's python, and use a fixed thread count.
export PATH := $(BIN):$(PATH)
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PYTHONHASHSEED := 0
# torch.compile's kernels are cached per checkout: the default cache in /tmp is shared by every
# checkout on the machine and does not tell apart kernels built under another ATEN_CPU_CAPABILITY,
# and one built for AVX-512 crashed a run under ATEN_CPU_CAPABILITY=avx2.
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/_build/torchinductor
# Where `make experiments` and DMCORE_RETRAIN=1 train before a record is installed in book/records.
export DMCORE_SCRATCH := $(CURDIR)/_build/records

.PHONY: book test unit outputs experiments env mathjax browser fashion-mnist clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[book]"
	touch $@

# Triton (an optional extra), for the tests of the EDF losses' Triton kernels under its interpreter.
$(TRITON): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[book,triton]"
	touch $@

# MathJax 3 from the npm registry (package-lock.json pins it), copied to where _config.yml serves it.
mathjax: $(MATHJAX)

$(MATHJAX): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf _build/mathjax
	mkdir -p _build/mathjax/mathjax
	cd node_modules/mathjax/es5 && cp -r tex-mml-chtml.js a11y adaptors input output sre ui $(CURDIR)/_build/mathjax/mathjax/

# Debian's chromium and chromium-driver, for the browser test, when they are missing.
browser:
	@tools/install_chromium.sh

# Debian's dataset-fashion-mnist, the files dmcore.lab.data.fashion_mnist reads, when they are missing.
fashion-mnist:
	@tools/install_fashion_mnist.sh

book: $(STAMP) $(MATHJAX) fashion-mnist
	$(BIN)/jupyter-book build . --builder html
	@echo "The book is at _build/html/index.html"

test: $(STAMP) $(TRITON) $(MATHJAX) browser fashion-mnist
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/python -m pytest tests $(CHAPTERS) --ignore=tests/browser --nbval --nbval-current-env \
		--nbval-sanitize-with book/sanitize.cfg --nbval-cell-timeout=1200
	$(BIN)/python tools/stored_config.py _config.yml _build/stored/_config.yml
	$(BIN)/jupyter-book build . --config _build/stored/_config.yml -n -W --keep-going --builder html
	DMCORE_REQUIRE_SITE=1 $(BIN)/python -m pytest tests/browser

# The one-minute loop for developers: the unit tests without the slow ones (no chapters, no browser).
unit: $(STAMP) $(TRITON)
	$(BIN)/python -m pytest tests --ignore=tests/browser -m "not slow" -q

# Every record under book/records trained again (resumable: an interrupted run continues where it stopped).
experiments: $(STAMP)
	$(BIN)/python -m dmcore experiments --records book/records

outputs: $(STAMP)
	$(BIN)/python tools/store_outputs.py $(CHAPTERS)

clean:
	rm -rf _build
