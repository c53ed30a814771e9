# One entry point for every routine job. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench migrate screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,plot]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole service (worker + beat + dispatcher); embedded broker/DB when none configured
run: $(STAMP)
	$(BIN)/signalgen dev

## test: the full suite (integration tests need Redis/PostgreSQL/RabbitMQ; required under CI), in
## three phases: everything but the fault suite and the `serial` tests on TEST_WORKERS
## pytest-xdist processes (each with its own PostgreSQL database and Redis db); the fault suite
## two scenarios at a time (each has its own broker and database); then the `serial` tests alone
## (one stops PostgreSQL; two time wall-clock latency)
TEST_WORKERS ?= 3
FAULT_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not serial and not faults"
	$(BIN)/python -m pytest -n $(FAULT_WORKERS) -m "faults and not serial"
	$(BIN)/python -m pytest -m serial

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

migrate: $(STAMP)
	$(BIN)/signalgen db upgrade

## screenshots: dashboard PNGs in artifacts/ after SCREENSHOT_SECONDS (300) of `signalgen dev`
screenshots: $(STAMP)
	$(BIN)/python -m signalgen.interfaces.screenshots

clean:
	rm -rf $(VENV) .signalgen .pytest_cache .mypy_cache .ruff_cache
