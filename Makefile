# Two commands matter: `make demo` (the whole pipeline) and `make test`.
# `make demo` writes only under runs/demo/ (ignored by git); `make demo-refresh` runs it and
# then copies the committed set (RESULTS.md, figures, tables) into demo/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-refresh clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "installing into $(VENV) (about a minute)"
	@start=$$(date +%s) && \
	$(PYTHON) -m venv $(VENV) && \
	$(PY) -m pip install --quiet -r requirements.txt && \
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install_seconds
	touch $(STAMP)

# One worker per core (at most 4), an idle worker taking tests from a busy one; TEST_WORKERS=0 runs the suite in
# this process. Its time on 2 cores, both ways: docs/reproducibility-and-speed.md.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal

demo: install
	$(PY) scripts/demo.py

demo-refresh: install
	$(PY) scripts/demo.py --refresh

# Removes the venv and the demo's own run (marked by demo.py); training runs under runs/ are the user's.
clean:
	rm -rf $(VENV)
	if [ -f runs/demo/.demo-run ]; then rm -rf runs/demo; fi
