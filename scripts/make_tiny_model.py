"""Build the tiny random-init LLaMA that the quick start trains: `python scripts/make_tiny_model.py`.

`--tokenizer_model PATH` uses an existing SentencePiece model (e.g. LLaMA's) instead of
training a small one on the demo data.
"""


from alpaca_cot import tiny
from alpaca_cot.cli import run


def main(out="models/tiny-llama", tokenizer_model=None, hidden_size=128, layers=2, heads=4):
    """Build a random-init LLaMA with a small tokenizer and save it to --out.

    Args:
        out: the folder the model and tokenizer are written to.
        tokenizer_model: an existing SentencePiece model to use instead of training one on the demo data.
        hidden_size: width of the model.
        layers: number of decoder layers.
        heads: number of attention heads.
    """
    path = tiny.build(out, tokenizer_model, hidden_size, layers, heads)
    print(f"wrote a tiny LLaMA to {path}")


if __name__ == "__main__":
    run(main)
