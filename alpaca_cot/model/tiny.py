"""A random-init LLaMA built from a config: tiny for the quick start and the tests, or of a
real shape (7b, 13b) for GPU benchmarks, since no weights can be downloaded here.

The tokenizer is either a given SentencePiece `.model` (the tests use the real LLaMA one) or
one trained here on the demo data with LLaMA's settings (BPE, byte fallback, no pad id).
"""

import json
import shutil
import tempfile
from pathlib import Path

from alpaca_cot import DATA_DIR
from alpaca_cot.data.preprocess import Prompter

TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
    "add_bos_token": True, "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 2048,
}


def train_sentencepiece(out_file: Path, texts: list[str], vocab_size: int = 1024):
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=f"{tmp}/sp", model_type="bpe",
            vocab_size=vocab_size, hard_vocab_limit=False, byte_fallback=True, split_digits=True,
            character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=True,
            remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        shutil.copy(f"{tmp}/sp.model", out_file)


# LLaMA-1 shapes: hidden size, MLP size, layers, heads.
SHAPES = {"7b": (4096, 11008, 32, 32), "13b": (5120, 13824, 40, 40), "30b": (6656, 17920, 60, 52),
          "65b": (8192, 22016, 80, 64)}


def save_tokenizer(out_dir: Path, tokenizer_model=None):
    """The given SentencePiece model, or one trained on the demo data, saved as a LLaMA tokenizer in out_dir."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer_model:
            shutil.copy(tokenizer_model, Path(tmp) / "tokenizer.model")
        else:
            records = json.loads((DATA_DIR / "demo.json").read_text(encoding="utf-8"))
            prompter = Prompter("alpaca")
            texts = [prompter.prompt(r["instruction"], r["input"]) + r["output"] for r in records]
            train_sentencepiece(Path(tmp) / "tokenizer.model", [line for t in texts for line in t.split("\n")])
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        tokenizer.save_pretrained(out_dir)
    return tokenizer


def llama_config(tokenizer, hidden_size, intermediate, layers, heads, init_std):
    """A LLaMA config; tokenizer None: LLaMA's own vocabulary size and BOS/EOS ids."""
    from transformers import LlamaConfig

    vocab, bos, eos = (32000, 1, 2) if tokenizer is None else (len(tokenizer), tokenizer.bos_token_id,
                                                                tokenizer.eos_token_id)
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=2048, bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
                       tie_word_embeddings=False, initializer_range=init_std)


def tensor_shapes(config) -> dict[str, tuple]:
    """Every tensor of a LLaMA checkpoint and its shape, from a model built on the meta device (no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def build(out_dir, tokenizer_model=None, hidden_size=128, layers=2, heads=4, seed=0, init_std=None, shape=None):
    """Write a random-init LLaMA and its tokenizer to out_dir; returns the folder."""
    import torch
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(out_dir, tokenizer_model)
    torch.manual_seed(seed)
    # Wider than the usual 0.02: a tiny random LM head otherwise gives near-uniform logits
    # that a LoRA adapter can barely move, and the demo would show no learning.
    # LLaMA's 8/3 MLP ratio, rounded to a multiple of 64 as 4-bit kernels need.
    intermediate = -(-hidden_size * 8 // 3 // 64) * 64
    if shape:
        hidden_size, intermediate, layers, heads = SHAPES[shape]
    init_std = init_std or (0.02 if shape else 2 / hidden_size ** 0.5)
    config = llama_config(tokenizer, hidden_size, intermediate, layers, heads, init_std)
    if shape and torch.cuda.is_available():  # billions of parameters: initialise on the GPU, in bf16
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    else:
        model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir
