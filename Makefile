# Two commands: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup sysdeps clean

setup: sysdeps $(STAMP)

# Graphviz's binaries (dot, sfdp) are needed by viz/; install them only where missing.
sysdeps:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	mkdir -p out
	$(PY) examples/demo.py --out out

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out
