# nunet: `make demo` and `make test` are all a fresh machine needs (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nunet-installed
PYTEST_ARGS ?=

.PHONY: install build test test-unit test-integration test-e2e bench profile lint typecheck demo docker clean

install: $(STAMP) build

# Re-run when the dependency list changes; otherwise `make install` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel "cython>=3.0"
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: install
	NUNET_REQUIRE_NATIVE=1 $(BIN)/python -m pytest tests/unit tests/integration tests/e2e -q $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest tests/integration -q $(PYTEST_ARGS)

test-e2e: install
	$(BIN)/python -m pytest tests/e2e -q $(PYTEST_ARGS)

bench: install
	mkdir -p bench/results
	$(BIN)/python -m bench --all --out bench/results/latest.json

profile: install
	$(BIN)/python profiles/record.py

lint: install
	$(BIN)/ruff check nunet bench tests profiles

typecheck: install
	$(BIN)/mypy nunet

demo: install
	.ci/ensure-dockerd --install
	$(BIN)/python -m nunet.testing.demo

docker:
	docker build -t nunet:dev .

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find nunet -name '*.so' -delete
	find nunet/_native -name '*.c' -delete
	find . -name __pycache__ -prune -exec rm -rf {} +
