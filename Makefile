# The two commands of the README: `make serve` and `make test`. Both build the
# project virtualenv (.venv) first when it is missing or setup.py changed.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/addonreg serve --config config/development.ini

# Lint and types first (a finding fails the run), then the suite.
test: $(STAMP)
	$(VENV)/bin/ruff check addonreg tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The benchmark also wants matplotlib (its plot) and py-spy (its profiles); wrk and nginx
# come from apt.
$(VENV)/.bench-stamp: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-stamp
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis addonreg.sqlite3*
