"""Padding-free packing: the same records give the same loss and gradients packed or padded (CPU)."""

import json
from pathlib import Path

import pytest
import torch

from alpaca_cot.model import models
from alpaca_cot.model.models import lora_model
from alpaca_cot.data.preprocess import Prompter, encode_batch
from alpaca_cot.train.throughput import CountingCollator

from conftest import ALL_LINEAR, mean_loss, small_run


def loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_packed_and_padded_batches_give_the_same_loss(tiny_llama, train_file, attn_implementation, train_on_inputs):
    tokenizer = models.load_tokenizer(str(tiny_llama))
    tokenizer.padding_side = "right"
    records = json.loads(train_file.read_text(encoding="utf-8"))[::25]  # alpaca and CoT, lengths 40-250
    columns = {k: [r[k] for r in records] for k in ("instruction", "input", "output")}
    enc = encode_batch(columns, tokenizer, Prompter("alpaca"), cutoff_len=256, train_on_inputs=train_on_inputs)
    features = [{"input_ids": i, "labels": l} for i, l in zip(enc["input_ids"], enc["labels"])]
    assert len({len(f["input_ids"]) for f in features}) > 5

    padder, packer = CountingCollator(tokenizer), CountingCollator(tokenizer, packing=True)
    padded, packed = padder(features), packer(features)
    assert packed["input_ids"].shape == (1, sum(enc["length"])) and "attention_mask" not in packed
    assert padded["input_ids"].shape[0] == len(features)
    assert packer.real_tokens == packer.padded_tokens == padder.real_tokens < padder.padded_tokens

    torch.manual_seed(0)
    model = lora_model(str(tiny_llama), "none", tokenizer, False, 8, 16, 0.0, ALL_LINEAR.split(","),
                       attn_implementation=attn_implementation)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give it values so that every LoRA gradient is exercised
            torch.nn.init.normal_(p, std=0.05)
    model.train()
    loss, grads = loss_and_grads(model, padded)
    packed_loss, packed_grads = loss_and_grads(model, packed)
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == packed_grads.keys() and len(grads) == 2 * 7 * 2
    for name, g in grads.items():
        torch.testing.assert_close(packed_grads[name], g, rtol=1e-4, atol=1e-4 * g.abs().max().item())


def test_a_packed_run_trains_without_padding(tmp_path, tiny_llama, train_file):
    from safetensors.torch import load_file

    out = tmp_path / "packed"
    records = json.loads(Path(train_file).read_text(encoding="utf-8"))[:16]
    trainer = small_run(tiny_llama, train_file, out, packing=True, max_steps=6, logging_steps=1)
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 6
    model, tokenizer = trainer.model, trainer.processing_class
    with model.disable_adapter():  # LoRA's B starts at zero: without the adapter the model is the untrained one
        before = mean_loss(model, tokenizer, records)
    assert mean_loss(model, tokenizer, records) < before
    weights = load_file(out / "adapter_model.safetensors")
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["padding_share"] == 0
