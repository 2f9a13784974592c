# Two commands matter: `make demo` and `make test`. Both install into .venv first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-all clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a looser spec would pull multi-GB CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make demo` again replaces the previous demo run (runs/demo); `scratchlm demo` alone refuses to.
DEMO_ARGS ?= --overwrite

demo: $(STAMP)
	$(BIN)/scratchlm demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Minutes-long tests (the Shakespeare recipe at a fixed step budget, every Unicode code point through three regex
# engines, the full distributed layout matrix): about 5 minutes on 2 cores.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not gpu'

clean:
	rm -rf $(VENV) runs build *.egg-info
