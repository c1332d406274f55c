"""The peer benchmark's pieces that run without a GPU (alpaca_cot/bench/peers.py): the micro-batches are finetune's
own, and `ours` runs over them in its own process and reports its figures. unsloth itself needs a GPU."""

import json

import pytest
import torch

from alpaca_cot import ROOT

from alpaca_cot.bench import peers
from alpaca_cot.cli import UserError
from conftest import run_python


def test_the_saved_micro_batches_are_the_ones_finetune_trains_on(tiny_llama, train_file, tmp_path, monkeypatch):
    from alpaca_cot.train import trainer as trainer_module
    from conftest import small_run

    saved = peers.micro_batches(str(tiny_llama), str(train_file), 4, 4, tmp_path / "b.pt", cutoff_len=256, seed=42)
    batches = torch.load(saved)
    seen = []
    original = trainer_module.CountingCollator.__call__
    monkeypatch.setattr(trainer_module.CountingCollator, "__call__", lambda self, f: seen.append(original(self, f)) or seen[-1])
    small_run(tiny_llama, train_file, tmp_path / "a", max_steps=4, batch_size=4, micro_batch_size=4, seed=42,
              lora_target_modules="q_proj,v_proj")
    assert len(batches) == 4 and len(seen) >= 4
    for mine, theirs in zip(batches, seen):
        assert all(torch.equal(mine[k], theirs[k]) for k in ("input_ids", "labels", "attention_mask"))


def test_ours_runs_over_them_in_its_own_process(tiny_llama, train_file, tmp_path):
    saved = peers.micro_batches(str(tiny_llama), str(train_file), 4, 4, tmp_path / "b.pt", cutoff_len=256)
    r = run_python(ROOT / "scripts" / "benchmark.py", "run_system", "--system", "ours", "--model_dir", tiny_llama,
                   "--batches", saved, "--config", "bf16:qv:4", "--out", tmp_path / "ours.json", "--warmup", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "ours.json").read_text())
    assert result["real_tokens_per_s"] > 0 and result["measured_micro_batches"] == 2 and result["first_loss"] > 0


def test_configs_and_ratios():
    assert peers.parse_config("4bit:all:16:ckpt") == {"quantization": "4bit", "modules": "all", "micro_batch_size": 16,
                                                      "checkpointing": True, "compile": False, "offload": False}
    assert peers.parse_config("4bit:qv:16:ckpt:compile:offload")["offload"] is True
    for bad in ("bf16:qkv:16", "bf16:qv:16:offload", "bf16:qv:16:fast"):
        with pytest.raises(UserError, match="quantization:modules:micro_batch"):
            peers.parse_config(bad)
    assert peers.peer_key("4bit:qv:16:ckpt:compile:offload") == "4bit:qv:16:ckpt"
    assert peers.peer_key("bf16:qv:32:compile") == "bf16:qv:32"
    assert peers.parse_systems(["finetune", "unsloth"]) == ["finetune", "unsloth"]
    with pytest.raises(UserError, match="--peer_systems"):
        peers.parse_systems(["axolotl"])
    row = peers.ratios({"c": {"ours": {"real_tokens_per_s": 150.0, "peak_gpu_gib": 6.0, "first_loss": 2.5},
                              "unsloth": {"real_tokens_per_s": 100.0, "peak_gpu_gib": 5.0, "first_loss": 2.5},
                              "finetune": {"real_tokens_per_s": 80.0, "peak_gpu_gib": 4.0}}})["c"]
    assert row["speed_vs_unsloth"] == 1.5 and row["memory_vs_unsloth"] == 1.2 and row["first_loss_difference"] == 0
    assert row["finetune_speed_vs_unsloth"] == 0.8 and row["finetune_memory_vs_unsloth"] == 0.8
    assert "speed_vs_unsloth" not in peers.ratios({"c": {"ours": None, "unsloth": {"real_tokens_per_s": 1.0}}})["c"]
