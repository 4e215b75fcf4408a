# Two commands matter: `make demo` (the whole pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "installing into $(VENV) (about a minute)"
	@start=$$(date +%s) && \
	$(PYTHON) -m venv $(VENV) && \
	$(PY) -m pip install --quiet -r requirements.txt && \
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install_seconds
	touch $(STAMP)

test: install
	$(PY) -m pytest

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) runs
