# sovra — the two commands of a fresh machine are `make run` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
LOCKVENV := .venv-lock
DATA    ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install dev run demo demo-steps demo-postgres test lint typecheck unit bench lock clean

# The product's environment: the runtime lock (with what `make demo` needs), nothing else.
install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build lies on this machine's disk; a plain `torch` pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# The tools on top: tests, lint, type checks, benchmarks, evaluations (requirements-dev.lock).
dev: $(DEVSTAMP)

$(DEVSTAMP): $(STAMP) requirements-dev.lock
	$(BIN)/pip install -q -r requirements-dev.lock -c requirements.lock
	touch $(DEVSTAMP)

CONFIG ?= demo/sovra.toml
SOVRA = $(BIN)/sovra --config $(CONFIG)
TICKETS = ../shared/data/company/tickets/it_tickets.csv

# The whole product on the sample company data: `make demo`, then the web UI/APIs until Ctrl-C.
run: demo
	$(SOVRA) serve --demo-logins

# Index the sample company data into ./sovra-data, run the demo searches, answers and the triage
# workflow as alice/carol/dana/bob/erin, and verify the audit log.
demo: install demo-steps

demo-steps:
	$(SOVRA) init --demo-directory
	$(SOVRA) source sync --all
	$(SOVRA) search "etcd database quota low space" --as alice --k 5
	$(SOVRA) search "etcd database quota low space" --as carol --k 5
	$(SOVRA) search "background check policy" --as dana --k 5
	$(SOVRA) ask "what should I do when etcd database quota is low?" --as alice
	$(SOVRA) ask "what should I do when etcd database quota is low?" --as carol
	$(SOVRA) flow classifier train ticket-category --from $(TICKETS) --label category
	$(SOVRA) flow classifier train ticket-urgency --from $(TICKETS) --label urgency
	BIN=$(BIN) CONFIG=$(CONFIG) demo/triage.sh
	$(SOVRA) audit verify

# The same demo with every shared store and the index in PostgreSQL + pgvector (docs/scale-out.md).
demo-postgres: dev
	BIN=$(BIN) demo/postgres.sh

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports --no-cache   # the layers of docs/architecture.md (.importlinter)

unit: dev
	$(BIN)/pytest -q -x

test: lint unit

bench: dev
	$(BIN)/python -m bench.run_all $(BENCH)

# Re-pin both locks after changing pyproject dependencies, in a scratch venv: the runtime lock is
# what the dependencies + `demo` pull in, the dev lock what `dev`, `bench` and `eval` add on top.
# Today's pins are kept where pyproject still allows them (one it no longer allows fails the
# install: delete its line and re-run); torch stays out, the install above puts it first.
lock:
	rm -rf $(LOCKVENV)
	$(PY) -m venv $(LOCKVENV)
	$(LOCKVENV)/bin/pip install -q torch==2.13.0
	$(LOCKVENV)/bin/pip install -q -c requirements.lock -e '.[demo]'
	$(LOCKVENV)/bin/pip freeze --exclude-editable | grep -v '^torch==' > $(LOCKVENV)/runtime.lock
	$(LOCKVENV)/bin/pip install -q -c $(LOCKVENV)/runtime.lock -c requirements-dev.lock -e '.[demo,dev,bench,eval]'
	$(LOCKVENV)/bin/pip freeze --exclude-editable | grep -v '^torch==' \
	  | grep -vxFf $(LOCKVENV)/runtime.lock > requirements-dev.lock
	mv $(LOCKVENV)/runtime.lock requirements.lock
	rm -rf $(LOCKVENV)

clean:
	rm -rf $(VENV) $(LOCKVENV) sovra-data .mypy_cache .ruff_cache .pytest_cache
