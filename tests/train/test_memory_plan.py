"""scripts/memory_plan.py: parameter counts against the real model class, the calibration against 7B
measurements it was not fitted on, monotonicity, and which cells count as measured."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from alpaca_cot.model import tiny
from alpaca_cot.cli import UserError

ROOT = Path(__file__).resolve().parents[2]
# 7B measurements the activation coefficients were not fitted on: (file, recipe, quantization, micro-batch,
# checkpointing, fused kernels). The estimate must land within TOLERANCE of each.
HELD_OUT = [("h200-fused.json", "none:fused", "none", 16, False, True),
            ("h200.json", "4bit:nockpt", "4bit", 16, False, True), ("h200.json", "4bit:12", "4bit", 12, True, True),
            ("h200-unfused.json", "none:32", "none", 32, False, False),
            ("h200-unfused.json", "4bit", "4bit", 16, False, False)]
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def plan():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("memory_plan")
    finally:
        sys.path.remove(str(ROOT / "scripts"))


@pytest.mark.parametrize("shape", list(tiny.SHAPES))
def test_parameter_counts_equal_the_model_class(plan, shape):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, mlp, layers, heads = tiny.SHAPES[shape]
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    counts = plan.parameters(shape)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embed"] == model.get_input_embeddings().weight.numel()
    linear = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert counts["linear"] == linear
    lora_per_layer = 2 * plan.LORA_R * 2 * hidden  # q_proj and v_proj: A (r x hidden) and B (hidden x r)
    assert counts["lora"] == layers * lora_per_layer


def bench(name):
    return json.loads((ROOT / "benchmarks" / name).read_text())


def test_calibration_reproduces_its_cells_and_predicts_the_others(plan):
    k = plan.activation_coefficients()
    for (_, ckpt, fused), (file, recipe, q, micro) in plan.CALIBRATION.items():
        got = plan.estimate_gib("7b", q, "1 GPU", 1, micro, ckpt, 512, k, fused)
        assert got == pytest.approx(bench(file)["train"][recipe]["peak_gpu_gib"], rel=1e-9)
    for file, recipe, q, micro, ckpt, fused in HELD_OUT:
        measured = bench(file)["train"][recipe]["peak_gpu_gib"]
        assert plan.estimate_gib("7b", q, "1 GPU", 1, micro, ckpt, 512, k, fused) == pytest.approx(measured, rel=TOLERANCE)


def test_estimates_grow_with_the_shape_and_the_batch_and_shrink_with_gpus(plan):
    k = plan.activation_coefficients()
    for q in plan.QUANTIZATIONS:
        for layout, n in [("1 GPU", 1), ("device_map", 2), ("device_map", 4), ("FSDP", 2), ("FSDP", 4)]:
            micro, ckpt = plan.defaults(q, None, layout != "FSDP")
            row = [plan.estimate_gib(s, q, layout, n, micro, ckpt, 512, k) for s in tiny.SHAPES]
            if row[0] is None:
                assert q == "8bit" and layout == "FSDP"
                continue
            assert row == sorted(row) and len(set(row)) == len(row), (q, layout, n)
            assert plan.estimate_gib("13b", q, layout, n, micro + 1, ckpt, 512, k) > row[1]
            assert plan.estimate_gib("13b", q, layout, n, micro, ckpt, 1024, k) > row[1]
        micro, ckpt = plan.defaults(q)
        for layout in ("device_map", "FSDP"):
            wide = [plan.estimate_gib("30b", q, layout, n, micro, ckpt, 512, k) for n in (2, 4, 8)]
            assert None in wide or wide == sorted(wide, reverse=True)
        assert plan.estimate_gib("30b", q, "device_map", 2, micro, ckpt, 512, k) < plan.estimate_gib(
            "30b", q, "1 GPU", 1, micro, ckpt, 512, k)


def test_measured_cells_are_marked_and_only_at_their_batch(plan, tmp_path, monkeypatch):
    cells = {(c["shape"], c["quantization"], c["layout"], c["gpus"]): c for c in plan.plan()}
    h100 = bench("h100.json")["train"]
    for q in plan.QUANTIZATIONS:
        cell = cells["7b", q, "1 GPU", 1]
        assert cell["source"] == "h100.json" and cell["gib"] == h100[q]["peak_gpu_gib"]
        assert cell["tokens_per_s"] == h100[q]["real_tokens_per_s"]
    assert {c["source"] for key, c in cells.items() if key[0] != "7b"} == {"estimate"}
    committed = json.loads(plan.EXTRA.read_text())["cells"] if plan.EXTRA.is_file() else []
    at_4 = {(c["shape"], c["quantization"], c["layout"], c["gpus"]) for c in committed if c["micro_batch_size"] == 4}
    assert {(c["shape"], c["quantization"], c["layout"], c["gpus"]) for c in plan.plan(micro_batch_size=4)
            if c["source"] != "estimate"} == at_4
    extra = tmp_path / "memory-plan-measured.json"
    extra.write_text(json.dumps({"cells": [dict(shape="13b", quantization="4bit", layout="FSDP", gpus=2,
                                                micro_batch_size=16, cutoff_len=512, peak_gpu_gib=9.9,
                                                real_tokens_per_s=1234.0, card="test")]}))
    monkeypatch.setattr(plan, "EXTRA", extra)
    cell = next(c for c in plan.plan() if (c["shape"], c["quantization"], c["layout"], c["gpus"]) == ("13b", "4bit", "FSDP", 2))
    assert (cell["gib"], cell["tokens_per_s"], cell["source"]) == (9.9, 1234.0, extra.name)


def test_table_and_flags(plan, capsys):
    cells = plan.main(gpus="2,4")
    out = capsys.readouterr().out
    assert sum(line.startswith("| ") for line in out.splitlines()) == 1 + len(tiny.SHAPES) * len(plan.QUANTIZATIONS)  # header + a row per shape x quantization
    assert "| 7b | none | **71.2 / 15.1k** m |" in out and "✗" in out and "65b:" in out
    assert any((c["gib"] or 0) > plan.CARD_GIB for c in cells) and any(c["gib"] is None for c in cells)
    for bad in (dict(gpus="1"), dict(gpus="two"), dict(micro_batch_size=0), dict(cutoff_len=-1)):
        with pytest.raises(UserError):
            plan.main(**bad)


def test_the_readme_shows_the_plan_as_the_script_prints_it(plan):
    """The README's table and its fewest-GPUs list are the script's output at its defaults: a change to the
    plan or to a measured cell that is not copied into the README fails here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cells = plan.plan()
    assert plan.table(cells) in readme
    assert plan.smallest_fits(cells, plan.BENCH_CUTOFF) in readme
