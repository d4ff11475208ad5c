# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The package and what it runs on (all `make demo` needs); then what the tests use, byte-compiled.
STAMP   = $(VENV)/.installed
DEV     = $(VENV)/.installed-dev
# PyPI's torch for Linux is a CUDA build: the environment takes about 6.3 GB.
MIN_FREE_MB ?= 6500

.PHONY: demo test bench assets clean .venv

.venv: $(DEV)

$(STAMP): pyproject.toml
	@free=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	if [ -z "$(wildcard $(VENV)/lib)" ] && [ "$$free" -lt $(MIN_FREE_MB) ]; then \
	  echo "error: installing needs about $(MIN_FREE_MB) MB free here, only $$free MB are: free some space (or MIN_FREE_MB=0 to try anyway)"; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --no-compile -e .
	touch $(STAMP)

# pip byte-compiles one file at a time; compileall uses every core. The demo, one process, compiles
# what it imports as it goes; the tests start many processes, so they get the whole environment
# compiled once (where PYTHONDONTWRITEBYTECODE is set, every process would compile afresh). It exits
# 1 on the few files written for newer Pythons (never imported here), hence the `|| true`.
$(DEV): $(STAMP)
	$(BIN)/python -m pip install --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $(DEV)

# Train a patch on the embedded default (synthetic benchmark, EfficientNet-Lite0), evaluate it, print the table.
# The photo-journey probes see 1024 photos instead of all 2048 to keep the demo near ten minutes
# on 2 cores; its report says they are a lower bound (`briarpatch evaluate patch=outputs/demo` measures all).
# Run again, it replaces its own outputs/demo (overwrite=true; elsewhere a trained run folder is kept).
demo: $(STAMP)
	$(BIN)/briarpatch train hydra.run.dir=outputs/demo eval.robustness_size=1024 overwrite=true

test: $(DEV)
	$(BIN)/python -m pytest -q

bench: $(DEV)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py

# Rebuild the shipped patch in assets/ (documented in README.md).
assets: $(STAMP)
	$(BIN)/python scripts/build_assets.py

clean:
	rm -rf outputs multirun .pytest_cache
