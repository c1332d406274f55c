"""Sharded LoRA training (finetune --fsdp) and naive model parallelism (--device_map auto): which
launches may use them, the Trainer's FSDP arguments, and the adapter gathered from the shards.

FSDP2 (torch's fully_shard), not FSDP1, for bf16 and for 4-bit alike: transformers 5 deprecates
FSDP1, and accelerate 1.15's FSDP2 path shards bitsandbytes' Params4bit when their storage dtype is
floating (bnb_4bit_quant_storage=bf16; uint8 storage would be left out of sharding, whole on every
GPU), while bitsandbytes 0.50's Params4bit keeps its quant_state through the chunking fully_shard
does. Checkpoints are SHARDED_STATE_DICT (each rank writes its own part of the adapter and of the
optimizer state through torch.distributed.checkpoint) so that resuming needs no full copy anywhere.
"""

import torch

from alpaca_cot.cli import UserError


def check_flags(fsdp: bool, device_map, quantization: str, world: int, fused_kernels=None):
    """The launches --fsdp and --device_map may run under; one line each, before anything loads. Liger's fused
    kernels stay off under both: its fused loss reads lm_head's weight outside lm_head's forward, and with
    --device_map auto on 2 GPUs it stopped at the first step with tensors on two devices."""
    if device_map not in (None, "auto"):  # "cpu" would be moved to the GPU by the Trainer anyway
        raise UserError(f"finetune's --device_map takes auto (or leave it out), got {device_map!r}")
    if fsdp and device_map is not None:
        raise UserError("--fsdp and --device_map exclude each other: FSDP places the shards itself")
    if device_map is not None and fused_kernels:
        raise UserError("--fused_kernels is not supported with --device_map; leave it unset (off with --device_map)")
    if device_map is not None and world > 1:
        raise UserError(f"--device_map {device_map} splits one process's model over the GPUs; it cannot run under "
                        f"a distributed launch ({world} processes): use --fsdp there")
    if not fsdp:
        return
    if world < 2:
        raise UserError("--fsdp shards the model over processes: launch it with torchrun or accelerate launch "
                        "(e.g. torchrun --nproc_per_node 4 finetune.py --fsdp ...)")
    if fused_kernels:
        raise UserError("--fused_kernels is not supported with --fsdp; leave it unset (off under --fsdp)")
    if quantization == "8bit":
        raise UserError("--fsdp cannot shard bitsandbytes int8 weights: use --quantization 4bit (QLoRA) or none (bf16)")
    if not torch.cuda.is_available():  # accelerate would quietly train with DDP instead
        raise UserError("--fsdp needs CUDA GPUs: accelerate shards only over GPUs (on CPUs, drop --fsdp)")


def layer_classes(name: str) -> list[str]:
    """The model's decoder layer classes (its _no_split_modules), read on the meta device: FSDP's wrap units."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    classes = list(getattr(model, "_no_split_modules", None) or [])
    if not classes:
        raise UserError(f"{name} ({config.model_type}) names no decoder layer class to shard by; --fsdp cannot wrap it")
    return classes


def fsdp_args(name: str, quantization: str) -> dict:
    """TrainingArguments fsdp and fsdp_config: full sharding by decoder layer, sharded checkpoints. For bf16
    only rank 0 reads the weights (cpu_ram_efficient_loading); accelerate skips that path for 4-bit, whose
    weights each rank quantizes on its own GPU before they are sharded. Gradient checkpointing stays the
    model's own (models.py), not FSDP's activation checkpointing: that wraps each layer in a CheckpointWrapper,
    whose module names peft 0.21 does not see through, so its adapter state dict (the final save and the
    Trainer's sharded checkpoints alike) comes out empty."""
    config = {"version": 2, "transformer_layer_cls_to_wrap": layer_classes(name),
              "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True,
              "cpu_ram_efficient_loading": quantization == "none" and torch.cuda.is_available()}
    from transformers import TrainingArguments

    # transformers >= 5.2x configures FSDP through fsdp_config alone (the option string is deprecated there);
    # older 5.x (5.17) wraps by layer only when the string says auto_wrap.
    configured_alone = hasattr(TrainingArguments, "_apply_legacy_fsdp_to_config")
    return {"fsdp": True if configured_alone else "full_shard auto_wrap", "fsdp_config": config}


def before_loading(quantization: str):
    """bf16 under FSDP: only local rank 0 reads the weights, the other ranks get empty tensors that FSDP fills
    with their shards. transformers reads this from the environment when loading, where `accelerate launch`
    with an FSDP config sets it; under torchrun it is set here. 4-bit loads on every rank (see fsdp_args)."""
    if quantization == "none" and torch.cuda.is_available():
        from accelerate.utils import enable_fsdp_ram_efficient_loading

        enable_fsdp_ram_efficient_loading()


def adapter_state_dict(trainer) -> dict | None:
    """The LoRA weights gathered whole from the shards, on the CPU of rank 0 (None elsewhere); every rank
    must call it. None when the model is not sharded (the PEFT model then saves its own weights).
    torch's get_model_state_dict is what accelerate uses for adapter_only full state dicts; frozen base
    weights are left out, so nothing of the base is gathered."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(trainer.model, options=options)
    return state if trainer.is_world_process_zero() else None
