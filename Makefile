# boxoffice: `make run` serves a node on the embedded stack, `make test` runs the whole suite.
# Both install first what they need: the Debian packages (scripts/install-system-deps.sh), then the venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install system-deps cluster rush lint bench clean

install: system-deps $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

# The venv is made once; the packages are (re)installed only when pyproject.toml is newer than the
# stamp, so `make install` is a no-op (well under a second) when nothing changed.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "boxoffice needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

run: install
	$(BIN)/boxoffice dev

# the suite under coverage; coverage.xml, an HTML report and the total in test-output/coverage/
test: install
	scripts/run-tests.sh $(PYTEST_ARGS)

cluster: install
	$(BIN)/boxoffice cluster --nodes 3

rush: install
	$(BIN)/boxoffice rush --scenario rush

lint: install
	$(BIN)/ruff check core contract server handlers realtime storage jobs loadtests tests
	$(BIN)/mypy core contract server handlers realtime storage jobs

clean:
	rm -rf .boxoffice test-output
