# Two commands on a fresh machine: `make run` (set up and run the demo) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup fetch bench lint clean quantize tflite

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

test: $(STAMP)
	$(BIN)/anoncam models fetch
	$(BIN)/python -m pytest -q $(TEST_ARGS)

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
