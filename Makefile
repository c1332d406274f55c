# The quick start: `make demo` (set up, train a tiny LLaMA on the demo data, generate) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_MODEL := models/tiny-llama
DEMO_ADAPTER := saved-demo
LORA_ALL := q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj

.PHONY: setup demo test clean-demo

setup: $(VENV)/.installed

# torch first and pinned: on CPU machines torch==2.13.0 takes the CPU wheel, not a CUDA build.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

demo: setup
	$(BIN)/python scripts/make_tiny_model.py --out $(DEMO_MODEL) --hidden_size 256 --layers 4
	$(BIN)/python finetune.py --base_model $(DEMO_MODEL) --data demo --output_dir $(DEMO_ADAPTER) --overwrite \
		--quantization none --batch_size 8 --micro_batch_size 8 --num_epochs 20 --learning_rate 3e-3 \
		--val_set_size 0 --warmup_steps 10 --logging_steps 20 --save_steps 1000 \
		--lora_r 32 --lora_alpha 64 --lora_target_modules $(LORA_ALL)
	$(BIN)/python generate.py --base_model $(DEMO_MODEL) --lora_weights $(DEMO_ADAPTER) \
		--instruction "What is the capital of Canada?"
	$(BIN)/python generate.py --base_model $(DEMO_MODEL) --lora_weights $(DEMO_ADAPTER) --instruction "中国的首都是哪里？"
	$(BIN)/python generate.py --base_model $(DEMO_MODEL) --lora_weights $(DEMO_ADAPTER) \
		--instruction "Tom is 4 years older than Ann. Ann is 9. How old will Tom be in 2 years? Let's think first. Chain of thought:"

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: setup
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_MODEL) $(DEMO_ADAPTER)
