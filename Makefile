# Two entry points (README): `make demo` and `make test`. Each creates or refreshes .venv.
# torch is pinned in the same pip command as everything else: on these machines 2.13.0 is a
# CPU build on local disk, and an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Task data: a local mirror when ../shared/data exists beside the checkout (or STUDY_DATA_DIR
# is set), otherwise the Hugging Face Hub; `study run` and `study validate` say which.
ifneq ($(wildcard ../shared/data/.),)
STUDY_DATA_DIR ?= $(abspath ../shared/data)
export STUDY_DATA_DIR
endif

.PHONY: venv demo test test-fast bench paper-presets clean data-source

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/study run demo

# Where the data of `make demo` and `make test` comes from (the mirror, or empty: the Hub).
data-source:
	@echo "STUDY_DATA_DIR=$${STUDY_DATA_DIR}"

# Both tiers: the fast unit tests and the slow end-to-end tests on a local Ray cluster.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -m "slow or not slow" -v --durations=15

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[test,bench]"
	$(VENV)/bin/python bench/executor_overhead.py
	$(VENV)/bin/python bench/curvature.py
	$(VENV)/bin/python bench/stage_sharing.py
	$(VENV)/bin/python bench/multi_worker.py
	$(VENV)/bin/python bench/eval_vs_lm_eval.py --n 500 --repeats 5 --threads 1
	$(VENV)/bin/python bench/report_scale.py

# Every paper-* preset end to end on the tiny model (quick sizes; ~11 min on 2 CPUs).
paper-presets: $(STAMP)
	$(VENV)/bin/python bench/paper_presets_tiny.py

clean:
	rm -rf $(VENV) results
