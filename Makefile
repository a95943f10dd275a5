# mrb — the two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-browser demo up test test-unit test-integration test-e2e screenshots lint fmt typecheck bench bench-large bench-matching clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "needs $(PY) (Python 3.11)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The web page tests drive Debian's Chromium through Playwright (no browser download).
# Chromium for the browser tests, and a CJK font so pages in Chinese render as text, not
# boxes, in screenshots (Debian packages: only the package registries are reachable).
install-browser:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "the browser tests need: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/mrb demo

up: $(STAMP)
	$(BIN)/mrb up

# Most tests wait on brokers, databases and child processes, not the CPU: two worker
# processes (pytest-xdist) halve the wall time on two cores (three were no faster).
# PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

test-unit: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) -m "not integration and not e2e"

test-integration: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) -m integration

test-e2e: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) -m e2e

# The README's pictures of each page (docs/screenshots/*.png): the page tests save them
# there instead of beside their temporary data (MRB_TEST_ARTIFACTS; needs the browser).
SCREENSHOT_TESTS := tests/e2e/test_finance_admin_pages.py tests/e2e/test_admin_users_page.py \
	tests/e2e/test_doctor_workbench.py tests/e2e/test_his_launch_page.py

screenshots: $(STAMP)
	MRB_TEST_ARTIFACTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -q -n $(PYTEST_WORKERS) $(SCREENSHOT_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# Not part of `make test`: ingest and checks against baselines of the same run, on SQLite
# and PostgreSQL (127.0.0.1:5432, database test); writes bench/report.json and prints the
# table (docs/performance.md). Sizes and rounds: MRB_BENCH_* in benchmarks/config.py.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The check at 10M results on PostgreSQL (and 100k, for the growth ratio); long.
bench-large: $(STAMP)
	MRB_BENCH_SIZES=100000,10000000 MRB_BENCH_DATABASES=postgres MRB_BENCH_SECTIONS=check \
	MRB_BENCH_REPORT=bench/report-large.json $(BIN)/python -m benchmarks

# Patient matching on a generated population of 10,000 people (seconds): precision and
# recall of automatic links, review load; rewrites the figures in docs/patient-matching.md.
bench-matching: $(STAMP)
	$(BIN)/python -m benchmarks.patient_matching --people 10000 --write-doc

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
