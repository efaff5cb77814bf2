# Two commands: `make run` (the platform on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint install install-dev bench-ingest bench-send bench-scale bench-archive chaos

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (PYTHON=$(PYTHON))."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py ensure_admin
	@echo "Serving on http://127.0.0.1:8000/admin/ (Ctrl-C stops web, worker and beat)."
	$(BIN)/honcho -f deploy/Procfile.dev -d . start

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint
	$(BIN)/pytest

# Benchmarks print their figures; they are not part of `make test`. They need PostgreSQL
# (BENCH_DATABASE_URL, default the local server) and wrk.
bench-ingest: install-dev
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python tests/benchmarks/bench_ingest.py

# A 20,000-recipient campaign through two worker processes to a fake Graph API (50 ms answers)
# on a channel limited to 1,000 messages/s. Needs PostgreSQL (BENCH_DATABASE_URL, default the
# local server's whatsapp_bench_send).
bench-send: install-dev
	$(BIN)/python tests/benchmarks/bench_send.py

# One, two and four worker processes draining the same SQS queue (moto) and database.
bench-scale: install-dev
	$(BIN)/python tests/benchmarks/bench_scale.py

# 1,000,000 messages archived to the local folder, against COPY | gzip on the same rows.
bench-archive: install-dev
	$(BIN)/python tests/benchmarks/bench_archive.py

# Webhooks and a campaign through two worker kills and an SQS outage, with real gunicorn,
# workers, beat, PostgreSQL (CHAOS_DATABASE_URL, default the local server's whatsapp_chaos)
# and SQS (moto). Prints its figures; exits 1 if anything was lost, doubled or left undone.
chaos: install-dev
	$(BIN)/python tests/chaos/chaos.py
