# One entry point. `make run` = the main job (all notebooks on the default data);
# `make test` = the test suite. Both build .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KERNEL := aus-lib
# torch 2.13.0 pinned here: the CPU build where the pip index serves it (README, "Other entry points"). GPU users:
#   make venv TORCH_REQ="torch"      (or install your CUDA build of torch into .venv first)
TORCH_REQ ?= -r requirements/torch-cpu.txt
STAMP := $(VENV)/.installed
# The main job's run name: unique per invocation, so no earlier run is ever overwritten. Expanded
# once (:=): a recursive `?=` re-ran `date` at every use and could name 03/04 a run that does not exist.
RUN := $(or $(RUN),main-$(shell date +%Y%m%d-%H%M%S))
OUT := outputs
KFOLDS ?= 5

.PHONY: venv run test lab bench kernel clean-venv report

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/torch-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet $(TORCH_REQ)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (aus_lib)" >/dev/null
	@# Notebook outputs never reach git: nbstripout cleans them at `git add` (a filter in .git/config).
	-$(VENV)/bin/nbstripout --install
	touch $(STAMP)

kernel: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (aus_lib)"

# The main job: synthetic data (generated on first use) -> folds -> 5-fold CV -> posteriors -> analysis.
run: $(STAMP)
	@$(PY) -c "from aus_lib.notebooks import check_kernel; check_kernel()"
	@mkdir -p $(OUT)/notebooks/$(RUN)
	$(VENV)/bin/papermill -k $(KERNEL) --cwd notebooks notebooks/01_make_folds.ipynb $(OUT)/notebooks/$(RUN)/01_make_folds.ipynb \
		-p kfolds $(KFOLDS) -p out_dir $(OUT)/folds/synthetic_$(KFOLDS)CV
	$(VENV)/bin/papermill -k $(KERNEL) --cwd notebooks notebooks/02_train_cv.ipynb $(OUT)/notebooks/$(RUN)/02_train_cv.ipynb \
		-p kfolds $(KFOLDS) -p params_file params/demo.json -p folds_dir $(OUT)/folds/synthetic_$(KFOLDS)CV \
		-p out_dir $(OUT)/runs -p run_name $(RUN)
	$(VENV)/bin/papermill -k $(KERNEL) --cwd notebooks notebooks/03_extract_posteriors.ipynb $(OUT)/notebooks/$(RUN)/03_extract_posteriors.ipynb \
		-p kfolds $(KFOLDS) -p run_dir $(OUT)/runs/$(RUN)
	$(VENV)/bin/papermill -k $(KERNEL) --cwd notebooks notebooks/04_analysis.ipynb $(OUT)/notebooks/$(RUN)/04_analysis.ipynb \
		-p run_dir $(OUT)/runs/$(RUN)
	@echo "Main job done: the run is in $(OUT)/runs/$(RUN), the executed notebooks in $(OUT)/notebooks/$(RUN)"

# A run's executed notebooks as self-contained HTML in outputs/runs/<run>/report/ (no RUN: the newest run).
report: $(STAMP)
	$(VENV)/bin/aus-emotion report $(if $(filter command line,$(origin RUN)),$(OUT)/runs/$(RUN))

# The sweep tests start a throwaway PostgreSQL server: install Debian's package when it is missing and we may.
test: $(STAMP)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
		echo "PostgreSQL is missing: its tests will be skipped (they fail under CI=true). apt-get install postgresql"
	@# One worker per core: the tests use one torch thread each, so two cores take half the time.
	$(PY) -m pytest -q -n auto

lab: $(STAMP)
	$(PY) -m pip install --quiet -e '.[lab]'
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/01_make_folds.ipynb

bench: $(STAMP)
	$(PY) bench/benchmark.py

clean-venv:
	rm -rf $(VENV)
