# The two commands of the README: `make serve` and `make test`. Both build the
# project virtualenv (.venv) first when it is missing or setup.py changed.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test bench bench-smoke clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/addonreg serve --config config/development.ini

# Format, lint and types first (a finding fails the run), then the suite.
# `$(VENV)/bin/ruff format addonreg client tests bench` applies the formatting.
test: $(STAMP)
	$(VENV)/bin/ruff format --check addonreg client tests bench
	$(VENV)/bin/ruff check addonreg client tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The benchmark also wants matplotlib (its plots), py-spy (its profiles) and psutil
# (CPU time, RSS); wrk and nginx come from apt. `bench` is the full run (about
# 25 minutes with the filter family, plus a minute to seed the 1M data set
# the first time); `bench-smoke` runs every scenario once on 20,000 rows in about
# 2 minutes.
$(VENV)/.bench-stamp: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-stamp
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(VENV)/.bench-stamp
	$(VENV)/bin/python bench/run.py --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis addonreg.sqlite3*
