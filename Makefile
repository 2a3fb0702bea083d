# Two commands set everything up on a fresh machine:
#   make demo   train -> export -> score the reference reviews end to end
#   make test   lint + the test suite
# Both create .venv and install what they need. The CPU torch build is installed first so the
# `train` extra never pulls a CUDA build; override TORCH for another build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ORT ?= cpu
DATA ?= ../shared/data/womens_clothing_reviews.csv
SPLIT ?= ../shared/data/womens_clothing_split.csv
TEXT_COLS ?= --text-col Title --text-col "Review Text"
WORK ?= runs/demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(ORT)

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[train,$(ORT),dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	mkdir -p $(WORK)
	$(BIN)/scorer vocab "$(DATA)" --out $(WORK)/vocab.json $(TEXT_COLS) \
		$(if $(wildcard $(SPLIT)),--split-file "$(SPLIT)")

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
