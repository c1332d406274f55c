"""Build the tiny random-init LLaMA that the quick start trains: `python scripts/make_tiny_model.py`.

`--tokenizer_model PATH` uses an existing SentencePiece model (e.g. LLaMA's) instead of
training a small one on the demo data.
"""


from pathlib import Path

from alpaca_cot import io, outputs

from alpaca_cot.model import tiny
from alpaca_cot.cli import run

# A tiny model (hidden 128, 2 layers, a small tokenizer) takes a few MiB; a real tokenizer model adds its size.
TINY_BYTES = 64 << 20


def main(out="models/tiny-llama", tokenizer_model=None, hidden_size=128, layers=2, heads=4, overwrite=False):
    """Build a random-init LLaMA with a small tokenizer and save it to --out.

    Args:
        out: the folder the model and tokenizer are written to.
        tokenizer_model: an existing SentencePiece model to use instead of training one on the demo data.
        hidden_size: width of the model.
        layers: number of decoder layers.
        heads: number of attention heads.
        overwrite: replace a --out folder that this script wrote before (it holds .alpaca-cot.json).
    """
    params = 2 * 32000 * hidden_size + layers * 12 * hidden_size ** 2  # embeddings and head, the layers (at most)
    outputs.check_outputs([outputs.Output(out, "--out", "folder", TINY_BYTES + 4 * params, io.MARKER)],
                     [("--tokenizer_model", tokenizer_model)], overwrite, what="a tiny model this script wrote")
    with io.atomic_folder(out, io.MARKER, dict(written_by="scripts/make_tiny_model.py", hidden_size=hidden_size,
                                               layers=layers, heads=heads)) as folder:
        tiny.build(folder, tokenizer_model, hidden_size, layers, heads)
    print(f"wrote a tiny LLaMA to {Path(out)}")


if __name__ == "__main__":
    run(main)
