"""alpaca-cot: LoRA instruction tuning of LLaMA-family models on a uniformly formatted
instruction collection (Alpaca, BELLE, FLAN chain-of-thought)."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: data/ and templates/ live beside this package.
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
TEMPLATES_DIR = ROOT / "templates"
