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
	@echo "make demo: the CLI and the simulator-backed demo arrive with the simulator and CLI issues."
	@echo "For now, the parser on its own:"
	$(BIN)/python -c "from holysheep_trio.sse import SSEParser; print(SSEParser().feed(b'data: hello\n\n'))"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_parser.py

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache .pytest_cache docs/_build
