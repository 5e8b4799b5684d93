# Two commands: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup sysdeps clean

setup: sysdeps $(STAMP)

# System packages, installed only where missing: Graphviz's binaries (dot, sfdp) for viz/,
# and Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium).
SYSPKGS := $(if $(shell command -v dot),,graphviz) $(if $(wildcard /usr/bin/chromium),,chromium)
sysdeps:
	@if [ -n "$(strip $(SYSPKGS))" ]; then \
	  echo "installing $(SYSPKGS) (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	mkdir -p out
	$(PY) examples/demo.py --out out

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out
