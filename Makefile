# Two commands matter: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench bench-imap bench-scale clean dovecot isync

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip byte-compiles what it installs, but not an editable project's own tree; without that
# (or where PYTHONDONTWRITEBYTECODE is set) every run compiles netaudit again, a fifth of a
# no-op `netaudit sync`.
COMPILE := $(BIN)/python -m compileall -q netaudit ingest analysis

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(COMPILE)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(COMPILE)
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/netaudit demo

test: $(VENV)/.installed-test dovecot
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_import.py

# IMAP sync against a local Dovecot, a bare imapclient loop and mbsync, in one run.
bench-imap: $(VENV)/.installed-test dovecot isync
	$(COMPILE)
	$(BIN)/python benchmarks/bench_imap.py --messages 25000 45000

# A ten-year mailbox: 1,000,000 messages in one mbox (2.2 GB under /tmp, generated once, about
# 6 minutes), then every command's time and peak memory. About 15 minutes in all.
bench-scale: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_scale.py --messages 1000000

# mbsync (Debian package isync), the benchmark's reference; installed as dovecot is.
isync:
	@if command -v mbsync >/dev/null 2>&1; then echo "isync: already installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends isync || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		  --no-install-recommends isync; }; \
	else echo "isync: missing; not root, so not installing (apt-get install isync)"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis

include tests/make_dovecot.mk
