"""Sharded training (--fsdp) and naive model parallelism (--device_map auto) as far as a CPU shows them.

accelerate shards only over GPUs, so finetune --fsdp itself is GPU-only (scripts/benchmark_shard.py
runs it there). Here: the refusals, the Trainer's FSDP arguments for a LLaMA and a non-LLaMA model,
and FSDP2 itself on two CPU processes (gloo), driven without the Trainer: one LoRA step on a bf16-storage
4-bit or a 32-bit base sharded by decoder layer, whose gathered adapter must equal the same step taken
unsharded and must come back whole through a sharded checkpoint (accelerate's save/load_fsdp_model, as the
Trainer saves and resumes); and the GPU driver's random checkpoint writer.
"""

import os
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alpaca_cot import ROOT

from alpaca_cot.model import sharding
from alpaca_cot.cli import UserError
from conftest import small_run


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("flags, world, message", [
    (dict(fsdp=True), 1, "launch it with torchrun"),
    (dict(fsdp=True, quantization="8bit"), 2, "cannot shard bitsandbytes int8"),
    (dict(fsdp=True, fused_kernels=True), 2, "--fused_kernels is not supported with --fsdp"),
    (dict(fsdp=True), 2, "--fsdp needs CUDA GPUs"),
    (dict(fsdp=True, device_map="auto"), 2, "exclude each other"),
    (dict(device_map="auto"), 2, "cannot run under a distributed launch"),
    (dict(device_map="auto", fused_kernels=True), 1, "--fused_kernels is not supported with --device_map"),
    (dict(device_map="cpu"), 1, "--device_map takes auto"),
])
def test_refusals_before_loading(flags, world, message, monkeypatch, tmp_path, tiny_llama, train_file):
    if torch.cuda.is_available() and "CUDA" in message:
        pytest.skip("a GPU is present")
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(UserError, match=message):
        small_run(tiny_llama, train_file, tmp_path / "out", **flags)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model, layer", [("llama", "LlamaDecoderLayer"), ("gpt2", "GPT2Block")])
def test_trainer_fsdp_arguments(model, layer, request):
    from transformers import TrainingArguments

    name = str(request.getfixturevalue("tiny_llama" if model == "llama" else "tiny_gpt2"))
    args = sharding.fsdp_args(name, "4bit")
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == [layer]
    plugin = TrainingArguments(output_dir="unused", use_cpu=True, **args).fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["transformer_cls_names_to_wrap"] == layer
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert not plugin.get("activation_checkpointing") and plugin["reshard_after_forward"] is True
    assert plugin["cpu_ram_efficient_loading"] is False  # 4-bit: each rank quantizes its own copy


QUANTIZATIONS = ("none", "4bit")


@pytest.fixture(scope="module")
def sharded_steps(tmp_path_factory, tiny_llama) -> tuple[Path, Path]:
    """tests/sharded_step.py for every quantization: sharded over two processes, and unsharded here while they
    start."""
    import sharded_step
    from conftest import free_port

    script, work, which = ROOT / "tests" / "sharded_step.py", tmp_path_factory.mktemp("steps"), list(QUANTIZATIONS)
    ranks = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                              str(free_port()), str(script), str(tiny_llama), str(work / "sharded"), ",".join(which)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sharded_step.main(str(tiny_llama), str(work / "single"), which, single=True)
    stderr = ranks.communicate(timeout=300)[1]
    assert ranks.returncode == 0, stderr[-3000:]
    return work / "sharded", work / "single"


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_sharded_adapter_gathers_to_the_unsharded_one(quantization, sharded_steps, tiny_llama):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    sharded, single = (folder / quantization for folder in sharded_steps)
    got, want = load_file(sharded / "adapter_model.safetensors"), load_file(single / "adapter_model.safetensors")
    assert sorted(got) == sorted(want) and any("lora_B" in k for k in got)
    for key in got:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    assert all(got[k].abs().max() > 0 for k in got if "lora_B" in k)  # the step moved B off its zero init
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), sharded)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert loaded and all(v.abs().max() > 0 for v in loaded.values())
    assert benchmark_shard().check_adapter(str(tiny_llama), sharded, "none")["ok"]  # the GPU driver's check agrees
    # the Trainer's sharded checkpoint (one DCP file per rank) loads back into a fresh sharded model, as on resume
    resume = json.loads((sharded / "resume.json").read_text())
    assert resume == {"keys": True, "equal": True, "files": [".metadata", "__0_0.distcp", "__1_0.distcp"]}


def benchmark_shard():
    spec = importlib.util.spec_from_file_location("benchmark_shard", ROOT / "scripts" / "benchmark_shard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_checkpoint_written_by_parallel_writers_loads(tmp_path, llama_tokenizer_model):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "random"
    benchmark_shard().build("64x192x3x4", str(folder), writers=2, tokenizer_model=str(llama_tokenizer_model))
    assert len(list(folder.glob("model-*.safetensors"))) == 4  # embeddings/norm/head, then one per layer
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and model.dtype == torch.bfloat16
    weights = [model.model.layers[i].mlp.down_proj.weight.float() for i in range(3)]
    assert all(abs(w.std().item() - 0.02) < 0.002 for w in weights)
    assert not torch.equal(weights[0], weights[1])  # each file from its own seed
    assert torch.equal(model.model.norm.weight, torch.ones_like(model.model.norm.weight))


def test_device_map_auto_trains_and_saves_on_cpu(tmp_path, tiny_llama, train_file):
    out = tmp_path / "out"
    trainer = small_run(tiny_llama, train_file, out, device_map="auto", max_steps=2)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    if not torch.cuda.is_available():
        assert {p.device.type for p in trainer.model.parameters()} == {"cpu"}


def test_gpu_driver_logs_a_failed_run_and_cleans_up(tmp_path, llama_tokenizer_model, train_file, capsys):
    """On a CPU finetune --fsdp refuses to run: the driver records the failure, keeps the log, removes the checkpoint."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    driver = benchmark_shard()
    row = driver.experiment("64x192x2x4:none", gpus=2, steps=1, resume_steps=1, data=str(train_file), work=tmp_path,
                            tokenizer_model=str(llama_tokenizer_model), keep=False)
    assert row["train"]["rc"] != 0 and "resume" not in row and row["build_seconds"] > 0
    assert "--fsdp needs CUDA GPUs" in (tmp_path / "64x192x2x4-none-train.log").read_text()
    assert not list(tmp_path.glob("llama-*")) and not list(Path("/dev/shm/alpaca-cot-shard").glob("llama-64x192*"))
    driver.print_table([row, {"experiment": "65b:4bit", "error": "RuntimeError: no room"}])
    table = capsys.readouterr().out
    assert "train FAILED (rc " in table and "ERROR RuntimeError: no room" in table


def test_fsdp_without_a_launch_is_one_line_and_nothing_else(tiny_llama, train_file, tmp_path):
    """The default --quantization 8bit would warn about the CPU first; the launch error comes before any warning."""
    from conftest import one_error_line, run_python

    proc = run_python(ROOT / "finetune.py", "--fsdp", "--base_model", tiny_llama, "--data", train_file,
                      "--output_dir", tmp_path / "out", env={k: v for k, v in os.environ.items() if k != "WORLD_SIZE"})
    assert "launch it with torchrun" in one_error_line(proc) and proc.stdout == ""
    assert not (tmp_path / "out").exists()

def test_gpu_driver_never_writes_into_or_removes_a_folder_it_did_not_build(tmp_path, monkeypatch, train_file):
    """A llama-<shape> folder of the user's where the driver would put its checkpoint is refused, not overwritten
    nor removed; so is `build --out` into a folder holding other files."""
    driver = benchmark_shard()
    mine = tmp_path / "llama-64x192x2x4"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / INDEX_NAME).write_text("{}")
    monkeypatch.setattr(driver, "checkpoint_home", lambda shape, work: tmp_path)
    with pytest.raises(UserError, match="did not write"):  # main logs it as the experiment's error
        driver.experiment("64x192x2x4:none", gpus=2, steps=1, resume_steps=1, data=str(train_file), work=tmp_path,
                          tokenizer_model=None, keep=False)
    with pytest.raises(UserError, match="did not write"):
        driver.build("64x192x2x4", str(mine), writers=1)
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", INDEX_NAME]
    assert (mine / "config.json").read_text() == "{}"



@pytest.mark.parametrize("spec", ["30b:8bit", "30b", "30b:none:x", "31b:none"])
def test_gpu_driver_checks_experiments_first(spec):
    with pytest.raises(UserError, match="--experiments|unknown shape"):
        benchmark_shard().main(experiments=spec)


INDEX_NAME = "model.safetensors.index.json"
