# The project's commands. Every target builds the virtual environment first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
SYSTEM_PYTHON ?= python3

.PHONY: demo test lint bench venv checkov clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt worker/requirements.txt
	test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

export PYTHONPATH := $(CURDIR)/worker

## checkov pins protobuf and grpc apart from pulumi's, so it gets a virtual environment
## of its own; the static checks in tests/test_static_checks.py run it from there.
CHECKOV_VENV := $(VENV)/checkov
export CHECKOV := $(abspath $(CHECKOV_VENV))/bin/checkov

checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

## Seed the dev stack's items into a local RabbitMQ and run the work Job's pods as processes.
## Options: ITEMS=file MODE=coarse|fine PARALLELISM=n WORK_SECONDS=s (defaults: Pulumi.dev.yaml).
DEMO_ARGS = $(if $(ITEMS),--items-file $(ITEMS)) $(if $(MODE),--mode $(MODE)) \
	$(if $(PARALLELISM),--parallelism $(PARALLELISM)) \
	$(if $(WORK_SECONDS),--work-seconds $(WORK_SECONDS))

demo: venv
	$(PYTHON) -m workqueue.demo $(DEMO_ARGS)

## Time the seeder and the worker against plain pika and the tutorial's amqp-tools on
## the local RabbitMQ (about 5 minutes); prints a table, writes bench/results.json.
## Options: BENCH_ARGS="--runs 3" (see `python -m bench.run --help`).
bench: venv
	$(PYTHON) -m bench.run $(BENCH_ARGS)

## The whole test suite against the local RabbitMQ.
test: venv checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo
