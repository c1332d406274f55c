"""alpaca-cot: LoRA instruction tuning of LLaMA-family models on a uniformly formatted
instruction collection (Alpaca, BELLE, FLAN chain-of-thought).

The path: a record goes data -> prompt -> ids/labels -> model -> adapter -> generation through five
modules, in this order: `data` (the records --data names, read, checked and drawn into the mixture),
`preprocess` (the prompt template and the ids/labels), `models` (the base model and its LoRA wrap),
`adapters` (the adapter folder, saved and loaded) and `generation` (base and adapter reloaded, answers).
`train` (finetune's recipe) and `answer` (generate's modes) call them in that order.
"""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: data/ and templates/ live beside this package.
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
TEMPLATES_DIR = ROOT / "templates"
