# The two entry points the README opens with.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test install clean vendor

$(BIN)/mocktrade: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/mocktrade

up: install
	$(BIN)/mocktrade up

test: install
	$(BIN)/python -m pytest $(or $(PYTEST_ARGS),-q)

# Re-fetch the console's vendored browser code (pinned npm release files); needs npm.
vendor:
	scripts/vendor.sh

clean:
	rm -rf $(VENV) .mocktrade
