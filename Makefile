# Two commands do everything on a fresh machine:
#   make demo   set up, then make a first image with the offline tiny models
#   make test   set up, then run the whole test suite
VENV ?= .venv
PYTHON ?= python3
# On these build machines `torch==2.13.0` resolves to a local CPU build; on a GPU host the same pin
# installs the CUDA build from PyPI.
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup demo test lint bench redis-server constraints

setup: $(VENV)/.installed

# constraints.txt holds the exact versions the suite passed with; pyproject.toml only the ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so nothing below can pull a second, multi-gigabyte build of it.
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# After changing a dependency: install the new ranges without constraints, run the suite, then this.
constraints:
	{ echo "# Exact versions Atelier's suite passed with: pip install -c constraints.txt -e '.[test]'"; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt

demo: setup
	$(BIN)/atelier imagine "a lighthouse on a cliff at dusk" --tiny --json

# The Redis backend's tests talk to a real redis-server from Debian's packages.
redis-server:
	@command -v redis-server >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi; }

test: setup redis-server
	$(BIN)/ruff check bot engine migrations tests
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check bot engine migrations tests
	$(BIN)/ruff format --check bot engine migrations tests
