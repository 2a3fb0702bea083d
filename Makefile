# Two commands set everything up on a fresh machine:
#   make demo   train -> export -> score -> evaluate, on the reference reviews
#   make test   lint + the test suite
# and one rebuilds the model shipped in the package:
#   make model  the bundled default model (scorer/default_model), same bytes on the same CPU
# Both create .venv and install what they need. torch is installed first, pinned, so the
# `train` extra never pulls another build; on a host whose pip does not already find the
# CPU build, TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu" points it there.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
ORT ?= cpu
DATA ?= ../shared/data/womens_clothing_reviews.csv
SPLIT ?= ../shared/data/womens_clothing_split.csv
TEXT_COLS ?= --text-col Title --text-col "Review Text"
LABEL ?= Rating
WORK ?= runs/demo
# Extra `scorer train` options; e.g. TRAIN_ARGS="--reference --variant packed" for the
# reference recipe's small model instead (a fraction of the time).
TRAIN_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(ORT)

.PHONY: demo test test-cluster lint install clean bench model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[train,$(ORT),dev,ray]"
	touch $@

install: $(STAMP)

SPLIT_ARGS = $(if $(wildcard $(SPLIT)),--split-file "$(SPLIT)")

demo: $(STAMP)
	mkdir -p $(WORK)
	$(BIN)/scorer train "$(DATA)" --out $(WORK)/model --overwrite $(TEXT_COLS) $(SPLIT_ARGS) \
		--label-col "$(LABEL)" $(TRAIN_ARGS)
	$(BIN)/scorer export $(WORK)/model --int8
	$(BIN)/scorer run "$(DATA)" --model $(WORK)/model --out $(WORK)/scores.parquet --overwrite
	$(BIN)/scorer eval "$(DATA)" --model $(WORK)/model --label-col "$(LABEL)" \
		$(if $(wildcard $(SPLIT)),--split-file "$(SPLIT)" --split test)

model: $(STAMP)
	$(BIN)/python -m scorer.train.bundle --data "$(DATA)" $(SPLIT_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# Every multi-node Ray case, the long ones included (`make test` runs the short ones).
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster -o addopts="-ra --strict-markers"

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
