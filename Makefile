# Two entry points for newcomers: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium chromium-driver npm

.PHONY: demo test lint install install-test system-deps bench eval clean

PORT   ?= 5000
# pip's and setuptools' chatter goes to a log, shown only when an install fails
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
QUIET  = > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(BIN)/python:
	@echo "Creating $(VENV) (first run only)"
	@$(PYTHON) -m venv $(VENV) || { echo "Python venv missing: run '$(SUDO) apt-get install python3-venv'"; exit 1; }
	@$(PIP) --upgrade pip $(QUIET)

# Stamps: reinstall only when pyproject.toml changes, so a second `make demo` starts at once
$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "Installing kb into $(VENV)"
	@$(PIP) -e . $(QUIET)
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "Installing the test dependencies into $(VENV)"
	@$(PIP) -e '.[test]' $(QUIET)
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test node_modules/axe-core/axe.min.js

# axe-core (accessibility rules) is injected into Chromium by the browser tests; pinned in package-lock.json
node_modules/axe-core/axe.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund --silent

## Install, crawl the bundled demo site served locally, index it, serve on http://127.0.0.1:5000 (make demo PORT=8080)
demo: install
	@$(BIN)/kb demo --port $(PORT)

## Debian packages the browser tests drive (headless Chromium + ChromeDriver)
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  command -v $$p >/dev/null 2>&1 || dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## Run the whole test suite (unit, crawler against a local HTTP server, real browser)
test: system-deps install-test
	@$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; \
	exit $$status

## pyflakes and import order (CI runs this before the tests)
lint: install-test
	$(BIN)/ruff check kb tests

bench: install-test
	$(BIN)/kb bench --quick

eval: install-test
	$(BIN)/kb eval ../shared/eval/medquad/dev/skin/notitle

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts
