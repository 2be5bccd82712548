# Two commands for users: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch 2.13.0 first: it resolves to the CPU build on local disk (FACTS.md); an unpinned
# torch pulled in by transformers would download a CUDA build of several GB.
# bubblewrap gives generated code a read-only root, a private /tmp, no network and its own PID
# namespace (tunegate's sandbox, and its pre-warmed workers). Installed from Debian's packages
# when missing and possible (root, apt-get); otherwise the sandbox runs degraded and says so.
$(STAMP): pyproject.toml | $(BIN)/python
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get install -y -q bubblewrap >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } \
	  || echo "warning: bubblewrap is not installed: the sandbox runs degraded (see tunegate doctor)"
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tunegate init demo --force
	cd demo && ../$(BIN)/tunegate run

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/ladder_timing.py

clean:
	rm -rf demo runs mlflow.db mlruns .pytest_cache
