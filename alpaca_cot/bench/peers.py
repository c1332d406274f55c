"""Speed against peers on the same micro-batches: `scripts/benchmark.py --peers unsloth`.

1. `micro_batches` builds the micro-batches finetune.py trains on (the data tokenised as finetune tokenises it,
   its length-grouped order for --seed, its collator) and saves them, so that every system computes the
   very same tensors in the same order.
2. Each system runs in a process of its own (unsloth patches transformers at import) over that file:
   `ours`, this project's model path (models.lora_model, fused kernels where installed, --compile_layers
   as the config says) in a plain loop; `unsloth`, FastLanguageModel with the same LoRA in the same loop.
   finetune.py itself (the Trainer) runs on the same data and seed, so it draws the same micro-batches.
3. Each run reports real (unpadded) tokens/s after a warm-up, the peak GPU memory and its first
   micro-batch's loss, before any update (the same model on the same tensors: `ratios` reports how far apart).

A config names one row of the comparison: `bf16:qv:16` (quantization, LoRA modules qv or all, micro-batch),
with options `ckpt` (gradient checkpointing; unsloth's offloaded kind), and for ours `compile` (--compile_layers)
and `offload` (--offload_activations). Rows that differ only in ours' options share one unsloth run (`peer_key`).
"""

import json
import time
from pathlib import Path

from alpaca_cot.cli import UserError

MODULES = {"qv": ["q_proj", "v_proj"], "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
SYSTEMS = ("ours", "unsloth")
OPTIONS = ("ckpt", "compile", "offload")
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0)  # dropout 0: unsloth's fused LoRA path needs it


def parse_config(spec: str) -> dict:
    """`4bit:all:16:ckpt` -> {quantization, modules, micro_batch_size, checkpointing, compile, offload}."""
    parts = str(spec).split(":")
    if len(parts) < 3 or parts[0] not in ("bf16", "4bit") or parts[1] not in MODULES or not parts[2].isdigit() \
            or any(o not in OPTIONS for o in parts[3:]) or ("offload" in parts[3:] and "ckpt" not in parts[3:]):
        raise UserError(f"--peer_configs {spec!r}: write quantization:modules:micro_batch[:ckpt][:compile][:offload], "
                        "quantization bf16 or 4bit, modules qv or all, offload only with ckpt (e.g. bf16:qv:16, "
                        "4bit:all:16:ckpt:offload)")
    return {"quantization": "none" if parts[0] == "bf16" else "4bit", "modules": parts[1],
            "micro_batch_size": int(parts[2]), "checkpointing": "ckpt" in parts[3:], "compile": "compile" in parts[3:],
            "offload": "offload" in parts[3:]}


def parse_systems(systems: list[str]) -> list[str]:
    """--peer_systems: some of ours, finetune (finetune.py itself) and unsloth."""
    if not systems or any(s not in (*SYSTEMS, "finetune") for s in systems):
        raise UserError(f"--peer_systems {','.join(systems)!r}: choose from ours, finetune, unsloth")
    return systems


def peer_key(spec: str) -> str:
    """The part of a config unsloth sees: `4bit:qv:16:ckpt:compile` -> `4bit:qv:16:ckpt`."""
    parts = str(spec).split(":")
    return ":".join(parts[:3] + [o for o in parts[3:] if o == "ckpt"])


def micro_batches(model_dir: str, data: str, micro_batch_size: int, n: int, out: Path, cutoff_len: int = 512,
                  seed: int = 42) -> Path:
    """The first n micro-batches finetune.py would train on (one micro-batch per step), saved to out."""
    import torch

    from alpaca_cot.model import models
    from alpaca_cot.data.loader import load_mixture
    from alpaca_cot.data.preprocess import Prompter, tokenise
    from alpaca_cot.train.resumable import EpochSeededLengthSampler
    from alpaca_cot.train.throughput import CountingCollator

    _, columns = load_mixture(data, seed=seed, log=lambda *a: None)
    tokenizer = models.load_tokenizer(model_dir)
    tokenizer.padding_side = "right"
    train, _ = tokenise(columns, tokenizer, Prompter("alpaca", tokenizer), cutoff_len, False, 0, seed, log=lambda *a: None)
    order = list(EpochSeededLengthSampler(train["length"], micro_batch_size, seed, micro_batch_size=micro_batch_size))
    collate = CountingCollator(tokenizer)
    rows = train.select_columns(["input_ids", "labels"])
    batches = [collate([rows[i] for i in order[k:k + micro_batch_size]])
               for k in range(0, min(n * micro_batch_size, len(order)), micro_batch_size)]
    torch.save([{k: v for k, v in b.items()} for b in batches], out)
    return out


def _ours(model_dir: str, config: dict):
    from alpaca_cot.model import kernels, models, offload

    tokenizer = models.load_tokenizer(model_dir)
    model = models.lora_model(model_dir, config["quantization"], tokenizer, config["checkpointing"], LORA["r"],
                              LORA["lora_alpha"], LORA["lora_dropout"], MODULES[config["modules"]],
                              fused_kernels=kernels.use_fused_kernels(None))
    if config["offload"]:
        offload.offload_activations(model, config["checkpointing"])
    return kernels.compile_layers(model) if config["compile"] else model


def _unsloth(model_dir: str, config: dict):
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=512, dtype=torch.bfloat16,
                                                 load_in_4bit=config["quantization"] == "4bit",
                                                 load_in_16bit=config["quantization"] == "none", local_files_only=True)
    return FastLanguageModel.get_peft_model(model, target_modules=MODULES[config["modules"]], bias="none",
                                            use_gradient_checkpointing="unsloth" if config["checkpointing"] else False,
                                            **LORA)


def run_system(system: str, model_dir: str, batches: str, config: str, out: str, warmup: int = 5):
    """One system over the saved micro-batches: a plain loop of forward, backward and AdamW step.

    Args:
        system: ours or unsloth.
        model_dir: the model folder.
        batches: the micro-batches saved by micro_batches.
        config: the config spec (parse_config).
        out: the JSON file the figures are written to.
        warmup: micro-batches run before the clock starts.
    """
    if system not in SYSTEMS:
        raise UserError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    spec = parse_config(config)
    model = (_unsloth if system == "unsloth" else _ours)(model_dir, spec)  # unsloth first: it patches at import
    import torch

    from alpaca_cot.train.throughput import gpu_sync

    saved = torch.load(batches)
    if len(saved) <= warmup:
        raise UserError(f"{batches}: {len(saved)} micro-batches, not more than the {warmup} of the warm-up")
    device = next(p for p in model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first_loss, tokens, started = None, 0, None
    for step, batch in enumerate(saved):
        if step == warmup:
            gpu_sync()
            started = time.perf_counter()
        real = int(batch["attention_mask"].sum())  # counted on the CPU: no wait for the GPU in the timed loop
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            first_loss = float(loss)  # one sync, before the clock starts
        if step >= warmup:
            tokens += real
    gpu_sync()
    seconds = time.perf_counter() - started
    result = {"system": system, "config": config, "real_tokens_per_s": round(tokens / seconds, 1),
              "measured_micro_batches": len(saved) - warmup, "first_loss": round(first_loss, 5),
              "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if cuda else None}
    Path(out).write_text(json.dumps(result, indent=1))
    return result


def ratios(rows: dict) -> dict:
    """{config: {system: figures, ratios to unsloth}} for the systems that ran: `speed_vs_unsloth`,
    `memory_vs_unsloth` and `first_loss_difference` for ours (the plain loop), `finetune_speed_vs_unsloth` and
    `finetune_memory_vs_unsloth` for finetune.py."""
    table = {}
    for config, systems in rows.items():
        peer = systems.get("unsloth")
        entry = dict(systems)
        for system, prefix in (("ours", ""), ("finetune", "finetune_")):
            mine = systems.get(system)
            if not (peer and mine):
                continue
            entry[f"{prefix}speed_vs_unsloth"] = round(mine["real_tokens_per_s"] / peer["real_tokens_per_s"], 3)
            if peer.get("peak_gpu_gib") and mine.get("peak_gpu_gib"):
                entry[f"{prefix}memory_vs_unsloth"] = round(mine["peak_gpu_gib"] / peer["peak_gpu_gib"], 3)
            if "first_loss" in mine:
                entry[f"{prefix}first_loss_difference"] = round(mine["first_loss"] - peer["first_loss"], 5)
        table[config] = entry
    return table
