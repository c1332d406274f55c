"""Tuning methods: what `--method` names, in one registry. A method says which flags it refuses, which modules
it trains, how it wraps the base model for training, and what it saves as the output folder's unit.

`lora` trains an adapter on the frozen base; peft's variants of it (DoRA, rsLoRA, PiSSA, OLoRA) are its
options (`--use_dora`, `--use_rslora`, `--init_lora_weights`). `full` trains every weight and saves the whole
model. A new method is a `Method` subclass added to METHODS; finetune (train/finetune.py) calls only these four.
"""

import re

from alpaca_cot.cli import UserError, as_list
from alpaca_cot.model import adapters, models

INITS = ("default", "gaussian", "olora", "pissa")


class Method:
    name = ""

    def check(self, flags: dict):
        """Refuse, in one line, the flags this method cannot run with (before any data or model loads)."""

    def target_modules(self, f):
        """The modules that get trained parts, as the run records them (None: the whole model)."""
        return None

    def build(self, f, tokenizer):
        """The model to train, from finetune's resolved flags f."""
        raise NotImplementedError

    def save(self, model, tokenizer, folder, state_dict=None, initial=None):
        """The output folder's unit: what generate.py and the export load."""
        raise NotImplementedError


class LoRA(Method):
    name = "lora"

    def check(self, flags: dict):
        for flag in ("use_dora", "use_rslora"):
            if not isinstance(flags[flag], bool):
                raise UserError(f"--{flag} must be True or False, got {flags[flag]!r}")
        init = flags["init_lora_weights"]
        if not isinstance(init, str) or not (init in INITS or re.fullmatch(r"pissa_niter_[1-9]\d*", init)):
            raise UserError(f"--init_lora_weights must be one of {', '.join(INITS)} or pissa_niter_N, got {init!r}")
        if init.startswith(("pissa", "olora")) and flags["quantization"] != "none":
            raise UserError(f"--init_lora_weights {init} rewrites the base weights it starts from, which a "
                            f"{flags['quantization']} base cannot hold exactly; use --quantization none")
        if flags["use_dora"] and flags["quantization"] == "8bit":
            raise UserError("--use_dora does not train on an 8-bit base in peft; use --quantization 4bit or none")
        if (flags["use_dora"] or init != "default") and (flags["fsdp"] or flags["device_map"]):
            raise UserError("--use_dora and --init_lora_weights other than default run on one process and one "
                            "device here; drop --fsdp / --device_map")

    def target_modules(self, f):
        return models.target_modules(f.name, as_list(f.lora_target_modules) if f.lora_target_modules else None)

    def build(self, f, tokenizer):
        return models.lora_model(f.name, f.quantization, tokenizer, f.gradient_checkpointing, f.lora_r, f.lora_alpha,
                                 f.lora_dropout, f.target_modules, f.fused_kernels, f.attn_implementation,
                                 f.upcast_norms, device_map=f.device_map, sharded=f.fsdp,
                                 variant=models.lora_variant(f.use_dora, f.use_rslora, f.init_lora_weights))

    def save(self, model, tokenizer, folder, state_dict=None, initial=None):
        adapters.save_adapter(model, tokenizer, folder, state_dict=state_dict, convert_from=initial)


class Full(Method):
    name = "full"

    def check(self, flags: dict):
        """Every weight trained: in 16/32-bit, on one device per process, with no LoRA options."""
        if flags["quantization"] != "none":
            raise UserError(f"--method full trains every weight, which a {flags['quantization']} base cannot; pass "
                            "--quantization none (bf16 on a GPU)")
        if flags["fsdp"] or flags["device_map"]:
            raise UserError("--method full runs one whole model per process here; drop --fsdp / --device_map")
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise UserError("--method full trains in bf16 (weights and optimizer states), which this GPU lacks; "
                            "fp16 weights cannot be trained by the Trainer's gradient scaler")
        lora = [f"--{k}" for k, default in (("lora_target_modules", None), ("use_dora", False), ("use_rslora", False),
                                            ("init_lora_weights", "default")) if flags[k] != default]
        if lora:
            raise UserError(f"{', '.join(lora)}: LoRA options, but --method full trains no adapter")

    def build(self, f, tokenizer):
        return models.full_model(f.name, tokenizer, f.gradient_checkpointing, f.fused_kernels, f.attn_implementation)

    def save(self, model, tokenizer, folder, state_dict=None, initial=None):
        adapters.save_model(model, tokenizer, folder)


METHODS = {m.name: m for m in (LoRA(), Full())}


def method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]
