"""finetune.py on a tiny LLaMA with the real tokenizer and real shared data (CPU)."""

import json
import os
from pathlib import Path

import pytest
import torch

from alpaca_cot.cli import UserError
from conftest import ROOT, free_port, logits, mean_loss, only_error, run_python, small_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama, train_file):
    out = tmp_path_factory.mktemp("run") / "adapter"
    trainer = small_run(tiny_llama, train_file, out, val_set_size=16, eval_steps=10, save_steps=10, learning_rate=2e-2)
    return out, trainer


def test_training_lowers_loss_and_saves_a_real_adapter(trained, tiny_llama, train_file):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from alpaca_cot.model.models import load_tokenizer

    out, trainer = trained
    assert (out / "adapter_config.json").is_file()
    weights = load_file(out / "adapter_model.safetensors")
    assert len(weights) == 2 * 7 * 2  # A and B for 7 modules in 2 layers
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at zero
    assert not list(out.glob(".saving-*")), "temporary save folder left behind"

    tokenizer = load_tokenizer(str(tiny_llama))
    records = json.loads(Path(train_file).read_text(encoding="utf-8"))[::10]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    before = mean_loss(base, tokenizer, records)
    base_logits = logits(base, tokenizer)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    after = mean_loss(reloaded, tokenizer, records)
    assert after < before - 0.5, (before, after)
    # The saved adapter is the trained model: identical logits, and different from the base.
    trained_model = trainer.model.eval()
    assert torch.equal(logits(reloaded, tokenizer), logits(trained_model, tokenizer))
    assert not torch.allclose(logits(reloaded, tokenizer), base_logits)
    assert trainer.state.global_step == 30


def test_rerun_refuses_to_overwrite_an_adapter(trained, tiny_llama, train_file):
    out, _ = trained
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a trained adapter"):
        small_run(tiny_llama, train_file, out)
    assert (out / "adapter_model.safetensors").read_bytes() == before


def test_resume_continues_from_checkpoint(tmp_path, tiny_llama, train_file):
    out = tmp_path / "run"
    first = small_run(tiny_llama, train_file, out, max_steps=4, save_steps=2, logging_steps=1)
    assert first.state.global_step == 4 and (out / "checkpoint-4").is_dir()
    second = small_run(tiny_llama, train_file, out, max_steps=6, save_steps=2, logging_steps=1,
                       resume_from_checkpoint="auto")
    assert second.state.global_step == 6
    steps = [h["step"] for h in second.state.log_history if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log history came back from the checkpoint
    # The optimizer state was restored, not restarted: Adam's step counter continued from 4.
    state = second.optimizer.state_dict()["state"]
    assert all(int(s["step"]) == 6 for s in state.values())


@pytest.mark.parametrize("quantization,checkpointing", [("8bit", False), ("4bit", False), ("4bit", True),
                                                        ("none", True)])
def test_kbit_and_checkpointing_paths_train_and_reload_on_cpu(tmp_path, tiny_llama, train_file, quantization,
                                                              checkpointing):
    """bitsandbytes' CPU path: the same code that runs on the GPU, around the CUDA kernels."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from alpaca_cot.model import models

    out = tmp_path / quantization
    trainer = small_run(tiny_llama, train_file, out, quantization=quantization, max_steps=4,
                        gradient_checkpointing=checkpointing)
    weights = load_file(out / "adapter_model.safetensors")
    # lora_B starts at zero: non-zero means gradients reached the adapter through the quantized layers.
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)
    base = models.load_model(str(tiny_llama), quantization)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    tokenizer = models.load_tokenizer(str(tiny_llama))
    got, want = logits(reloaded, tokenizer), logits(trainer.model.eval(), tokenizer)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want, atol=0.2 if quantization == "4bit" else 1e-4)


def test_ddp_torchrun_and_distributed_launch_on_gloo(tmp_path, tiny_llama, train_file):
    common = ["finetune.py", "--base_model", str(tiny_llama), "--data", str(train_file), "--quantization", "none",
              "--batch_size", "8", "--micro_batch_size", "2", "--max_steps", "3", "--val_set_size", "0",
              "--cutoff_len", "128", "--report_to", "none", "--save_steps", "1000"]
    for launcher in (["-m", "torch.distributed.run"], ["-m", "torch.distributed.launch"]):
        out = tmp_path / launcher[1].replace(".", "_")
        port = free_port()  # not the default 29500, which another run on this machine may hold
        proc = run_python(*launcher, "--nproc_per_node", "2", "--master_port", str(port), *common, "--output_dir", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        config = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.index("}") + 1])
        assert config["world_size"] == 2 and config["gradient_accumulation_steps"] == 2  # 8 / (2 x 2)
        assert proc.stdout.count("alpaca-cot finetune") == 1  # only rank 0 prints and writes
        assert (out / "adapter_model.safetensors").is_file()


# finetune.py with a real base model and data at hand: every bad flag value or input stops it in one line
# before any model loads, and nothing is written, neither the output folder nor anything in the working folder.
BAD_INPUTS = {
    "learning_rate": (["--learning_rate", "0"], "--learning_rate must be > 0, got 0"),
    "num_epochs": (["--num_epochs", "0"], "--num_epochs must be > 0 unless --max_steps is, got 0"),
    "lora_r": (["--lora_r", "0"], "--lora_r must be a positive integer, got 0"),
    "lora_alpha": (["--lora_alpha", "-16"], "--lora_alpha must be > 0, got -16"),
    "lora_dropout": (["--lora_dropout", "1.0"], "--lora_dropout must be in [0, 1), got 1.0"),
    "warmup_steps": (["--warmup_steps", "-1"], "--warmup_steps must be an integer >= 0, got -1"),
    "logging_steps": (["--logging_steps", "0"], "--logging_steps must be an integer >= 1, got 0"),
    "eval_steps": (["--eval_steps", "0"], "--eval_steps must be an integer >= 1, got 0"),
    "save_steps": (["--save_steps", "0"], "--save_steps must be an integer >= 1, got 0"),
    "val_set_size": (["--val_set_size", "-5"], "--val_set_size must be an integer >= 0, got -5"),
    "seed": (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    "save_total_limit": (["--save_total_limit", "0"], "--save_total_limit must be an integer >= 1 or None, got 0"),
    "report_to unknown": (["--report_to", "tensorbord"], "--report_to 'tensorbord' is unknown"),
    "report_to not installed": (["--report_to", "wandb"], "--report_to wandb needs the wandb package"),
    "prompt template": (["--prompt_template_name", "nope"], "unknown prompt template 'nope'"),
    "unknown size": (["--size", "8"], "unknown --size"),
    "missing data file": (["--data", "/nonexistent/x.json"], "/nonexistent/x.json not found"),
    "empty dataset": (["--data", "{empty}"], "holds no usable records"),
    "cutoff below the prompt": (["--cutoff_len", "20"], "smaller than the prompt template"),
    "micro batch not dividing": (["--batch_size", "10", "--micro_batch_size", "4"], "multiple of --micro_batch_size"),
    "base model missing": (["--base_model", "/nonexistent/model"], "base model /nonexistent/model not found"),
    "bitsandbytes broken": (["--quantization", "8bit"], "needs a working bitsandbytes"),
    "unknown quantization": (["--quantization", "3bit"], "unknown --quantization"),
    "val set eats the data": (["--val_set_size", "5000"], "leaves no training data"),
    "fused kernels without a GPU": (["--fused_kernels", "True"], "needs a CUDA GPU and liger-kernel"),
    "unknown attention": (["--attn_implementation", "fast"], "unknown --attn_implementation"),
    "flex attention without a GPU": (["--attn_implementation", "flex_attention"], "trains only on a GPU"),
    "flash attention without flash-attn": (["--attn_implementation", "flash_attention_2"], "needs the flash-attn"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_writes_nothing(case, tmp_path, tiny_llama, train_file):
    args, message = BAD_INPUTS[case]
    empty, work = tmp_path / "empty.json", tmp_path / "work"
    empty.write_text("[]")
    work.mkdir()
    args = [a.replace("{empty}", str(empty)) for a in args]
    env = None
    if case == "bitsandbytes broken":
        fake = tmp_path / "fake"
        fake.mkdir()
        (fake / "bitsandbytes.py").write_text("raise ImportError('libbitsandbytes_cuda not found')\n")
        env = dict(os.environ, PYTHONPATH=str(fake))
    base = [] if "--base_model" in args or "--size" in args else ["--base_model", str(tiny_llama)]
    data = [] if "--data" in args else ["--data", str(train_file)]
    quantization = [] if "--quantization" in args else ["--quantization", "none"]
    proc = run_python(ROOT / "finetune.py", *base, *data, *quantization, *args, "--output_dir", work / "out",
                      cwd=work, env=env)
    only_error(proc, message)
    assert list(work.iterdir()) == []


def test_same_seed_same_adapter(tmp_path, tiny_llama, train_file):
    from safetensors.torch import load_file

    torch.manual_seed(123)  # whatever the global RNG holds, --seed decides
    small_run(tiny_llama, train_file, tmp_path / "a", max_steps=2)
    torch.manual_seed(456)
    small_run(tiny_llama, train_file, tmp_path / "b", max_steps=2)
    a, b = (load_file(tmp_path / d / "adapter_model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    small_run(tiny_llama, train_file, tmp_path / "c", max_steps=2, seed=7)
    c = load_file(tmp_path / "c" / "adapter_model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_throughput_leaves_evaluation_out():
    from types import SimpleNamespace

    from alpaca_cot.train.throughput import throughput_callback

    collator = SimpleNamespace(real_tokens=0, padded_tokens=0)
    speed = throughput_callback(collator, warmup_steps=1)
    args, state = SimpleNamespace(eval_strategy="steps"), SimpleNamespace(global_step=0, max_steps=3)
    speed.on_train_begin(args, state, None)
    for step in range(1, 4):
        collator.real_tokens += 90
        collator.padded_tokens += 100
        state.global_step = step
        speed.on_step_end(args, state, None)
        if step == 2:  # an evaluation: 1000 tokens that must not count as training
            collator.real_tokens += 1000
            collator.padded_tokens += 1000
            speed.on_evaluate(args, state, None)
    speed.on_train_end(args, state, None)
    m = speed.metrics()
    assert m["measured_steps"] == 2 and m["padding_share"] == 0.1  # 180 real of 200 padded, eval excluded
    assert m["real_tokens_per_s"] > 0


def _sum_on_rank(rank, init_file, results):
    from alpaca_cot.train.throughput import all_ranks_sum

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results[rank] = all_ranks_sum([rank + 1, 10 * (rank + 1)])
    torch.distributed.destroy_process_group()


def test_token_counts_are_summed_over_ranks(tmp_path):
    """Each rank collates its own batches, so tokens/s adds every rank's count, not rank 0's times two."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        procs = [ctx.Process(target=_sum_on_rank, args=(r, tmp_path / "init", results)) for r in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert dict(results) == {0: [3, 30], 1: [3, 30]}


def test_default_micro_batch_follows_the_measured_memory():
    from alpaca_cot.model.kernels import use_fused_kernels
    from alpaca_cot.train.recipes import default_gradient_checkpointing, default_micro_batch_size

    assert use_fused_kernels() is False  # no GPU here: auto means off
    assert [default_gradient_checkpointing(q) for q in ("none", "8bit", "4bit")] == [False, False, True]
    assert default_micro_batch_size("none", False) == 16
    assert default_micro_batch_size("none", True) == 32
    assert default_micro_batch_size("8bit", True) == default_micro_batch_size("4bit", True) == 16


def test_overlap_settings_are_training_arguments_of_this_transformers(tmp_path):
    """Every --overlap_steps setting is a TrainingArguments parameter and reaches the accelerator's config; a
    name this transformers lacks raises rather than vanishing silently."""
    import inspect

    from transformers import TrainingArguments

    from alpaca_cot.train.trainer import OVERLAP_STEPS, _training_args

    assert set(OVERLAP_STEPS) <= set(inspect.signature(TrainingArguments.__init__).parameters)
    args = _training_args(output_dir=str(tmp_path), use_cpu=True, group_by_length=False, report_to="none",
                          **OVERLAP_STEPS)
    assert args.accelerator_config.non_blocking  # pinned memory: on a GPU only
    assert not args.logging_nan_inf_filter
    with pytest.raises(TypeError, match="take no dataloader_pin_memmory"):
        _training_args(output_dir=str(tmp_path), use_cpu=True, group_by_length=False, dataloader_pin_memmory=True)


def test_speed_warm_up_is_counted_in_micro_batches_per_process():
    from alpaca_cot.train.throughput import untimed_steps

    assert untimed_steps(4, 1000) == 5 and untimed_steps(1, 1000) == 20  # 20 micro-batches on any GPU count
    assert untimed_steps(1, 50) == 10 and untimed_steps(4, 3) == 1  # at most a fifth of the run, at least one
