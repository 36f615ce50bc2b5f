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

# Index the sample company data into ./sovra-data, then run the demo searches and answers.
run: install
	$(BIN)/sovra --config demo/sovra.toml init --demo-directory
	$(BIN)/sovra --config demo/sovra.toml source sync --all
	$(BIN)/sovra --config demo/sovra.toml search "etcd database quota low space" --as alice --k 5
	$(BIN)/sovra --config demo/sovra.toml search "etcd database quota low space" --as carol --k 5
	$(BIN)/sovra --config demo/sovra.toml search "background check policy" --as dana --k 5
	$(BIN)/sovra --config demo/sovra.toml ask "what should I do when etcd database quota is low?" --as alice
	$(BIN)/sovra --config demo/sovra.toml ask "what should I do when etcd database quota is low?" --as carol
	$(BIN)/sovra --config demo/sovra.toml audit verify

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

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
