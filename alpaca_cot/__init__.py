"""alpaca-cot: LoRA instruction tuning of LLaMA-family models on a uniformly formatted
instruction collection (Alpaca, BELLE, FLAN chain-of-thought).

The package's top is the house every stage uses (cli, config, io, outputs, text, hub); the work sits in
stage folders, each importing only those before it: data -> model -> train | infer -> eval -> study (and
bench). A record goes data -> prompt -> ids/labels -> model -> adapter -> generation through five
modules, in this order: `data.loader` (the records --data names, read, checked and drawn into the
mixture), `data.preprocess` (the prompt template and the ids/labels), `model.models` (the base model and
its LoRA wrap), `model.adapters` (the adapter folder, saved and loaded) and `infer.generation` (base and
adapter reloaded, answers). `train.finetune` (finetune's recipe) and `infer.answer` (generate's modes)
call them in that order.

Three registries are the places to extend: a tuning method is an entry of `model.methods`, an evaluation
task is a file of `eval/tasks/`, and a dataset is an entry of data/catalog.json (whose formats
`data.schemas` recognises in any --data file). finetune's flags are one dataclass, `train.config`.
"""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: data/ and templates/ live beside this package.
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
TEMPLATES_DIR = ROOT / "templates"
