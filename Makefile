# sovra — the two commands of a fresh machine are `make run` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run demo test lint typecheck unit bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build lies on this machine's disk; a plain `torch` pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

SOVRA = $(BIN)/sovra --config demo/sovra.toml
TICKETS = ../shared/data/company/tickets/it_tickets.csv

# The whole product on the sample company data: `make demo`, then the web UI/APIs until Ctrl-C.
run: demo
	$(SOVRA) serve --demo-logins

# Index the sample company data into ./sovra-data, run the demo searches, answers and the triage
# workflow as alice/carol/dana/bob/erin, and verify the audit log.
demo: install
	$(SOVRA) init --demo-directory
	$(SOVRA) source sync --all
	$(SOVRA) search "etcd database quota low space" --as alice --k 5
	$(SOVRA) search "etcd database quota low space" --as carol --k 5
	$(SOVRA) search "background check policy" --as dana --k 5
	$(SOVRA) ask "what should I do when etcd database quota is low?" --as alice
	$(SOVRA) ask "what should I do when etcd database quota is low?" --as carol
	$(SOVRA) flow classifier train ticket-category --from $(TICKETS) --label category
	$(SOVRA) flow classifier train ticket-urgency --from $(TICKETS) --label urgency
	BIN=$(BIN) demo/triage.sh
	$(SOVRA) audit verify

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports --no-cache   # the layers of docs/architecture.md (.importlinter)

unit: install
	$(BIN)/pytest -q -x

test: lint unit

bench: install
	$(BIN)/python -m bench.run_all $(BENCH)

# Re-pin the lock after changing pyproject dependencies.
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^torch==' > requirements.lock

clean:
	rm -rf $(VENV) sovra-data .mypy_cache .ruff_cache .pytest_cache
