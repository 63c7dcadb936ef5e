# boxoffice: `make run` serves a node on the embedded stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install cluster rush lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/boxoffice dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

cluster: install
	$(BIN)/boxoffice cluster --nodes 3

rush: install
	$(BIN)/boxoffice rush --scenario rush

lint: install
	$(BIN)/ruff check server handlers realtime storage jobs loadtests tests
	$(BIN)/mypy server handlers realtime storage jobs

clean:
	rm -rf .boxoffice test-output
