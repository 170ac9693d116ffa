# Two entry points for newcomers: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium chromium-driver npm

.PHONY: demo test install install-test system-deps bench eval clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "Python venv missing: run '$(SUDO) apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python node_modules/axe-core/axe.min.js
	$(BIN)/python -m pip install --quiet -e '.[test]'

# axe-core (accessibility rules) is injected into Chromium by the browser tests; pinned in package-lock.json
node_modules/axe-core/axe.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund --silent

## Install, crawl the bundled demo site served locally, index it, serve on http://127.0.0.1:5000
demo: install
	$(BIN)/kb demo --port 5000

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

bench: install-test
	$(BIN)/kb bench --quick

eval: install-test
	$(BIN)/kb eval ../shared/eval/medquad/dev/skin/notitle

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts
