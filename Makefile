# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck pytest demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check holysheep_trio tests benchmarks
	$(BIN)/ruff format --check holysheep_trio tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict holysheep_trio

pytest: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report= -p no:cacheprovider
	$(BIN)/python -m coverage report --include='holysheep_trio/sse.py' --fail-under=100 --show-missing

docs: $(STAMP)
	rm -rf docs/_build
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

test: lint typecheck pytest docs

demo: $(STAMP)
	$(BIN)/holysheep-trio chat "Explain structured concurrency in two sentences." --max-tokens 60
	$(BIN)/holysheep-trio bench --runs 5 --max-tokens 40 --concurrency 8

# Runs every benchmark (peers in the same run) and rewrites the results in docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache .pytest_cache docs/_build
