# The two Quick-start commands (`make run`, `make test`) set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_VENV ?= .venv-bench
STAMP := $(VENV)/.ctxflow-installed

.PHONY: run test lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p .ctxflow
	$(BIN)/ctxflow run examples/transcripts/openhands-ponyc-4588.jsonl --budget 12000 \
		--report .ctxflow/run-report.json --windows .ctxflow/run-windows.jsonl --plot .ctxflow/run.png

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ctxflow tests benchmarks examples
	$(BIN)/ruff format --check ctxflow tests benchmarks examples
	$(BIN)/mypy ctxflow

$(BENCH_VENV)/.ctxflow-installed: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[dev]' -r benchmarks/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.ctxflow-installed
	$(BENCH_VENV)/bin/python -m benchmarks --out bench/results.json

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke --out bench/results-smoke.json

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist bench .pytest_cache .mypy_cache .ruff_cache
