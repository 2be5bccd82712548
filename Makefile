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
# $(call debian,COMMAND,PACKAGE,WHAT IS LOST WITHOUT IT): install PACKAGE from Debian's packages
# when COMMAND is missing and that is possible (root, apt-get); otherwise say what is lost.
debian = @command -v $(1) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get install -y -q --no-install-recommends $(2) >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $(2) >/dev/null 2>&1; }; }; } \
	  || echo "warning: $(2) is not installed: $(3)"

$(STAMP): pyproject.toml | $(BIN)/python
	$(call debian,bwrap,bubblewrap,the sandbox runs degraded (see tunegate doctor))
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tunegate init demo --force
	cd demo && ../$(BIN)/tunegate run

# Chromium renders the HTML report in the report tests (headless, offline).
test: $(STAMP)
	$(call debian,chromium,chromium,the report's browser tests are skipped)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(call debian,chromium,chromium,the report's browser tests are skipped)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/ladder_timing.py

clean:
	rm -rf demo runs mlflow.db mlruns .pytest_cache
