"""Checks of flag values that a type alone cannot express, run before any data or model loads.

finetune() calls `check_finetune_flags` first, and `decoding_kwargs` (generate.py's first step)
checks DECODING_RULES. --quantization, --attn_implementation and --device_map are checked against what
can run here (finetune, generate, the export). Each failure is a one-line `UserError` naming the flag and value.
"""

import importlib.util
import re

from alpaca_cot.cli import UserError, as_list
from alpaca_cot.data.preprocess import Prompter

QUANTIZATIONS = ("8bit", "4bit", "none")
# transformers' attention implementations that honour padding-free packing (position ids restarting
# at every record); flash_attention_2 needs the flash-attn package.
ATTENTIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2")
DEVICE_MAPS = ("cpu", "auto")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# flag: (test, what the value must be)
FINETUNE_RULES = {
    "learning_rate": (lambda v: _number(v) and v > 0, "> 0"),
    "lora_r": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "lora_alpha": (lambda v: _number(v) and v > 0, "> 0"),
    "lora_dropout": (lambda v: _number(v) and 0 <= v < 1, "in [0, 1)"),
    "warmup_steps": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "logging_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "eval_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "save_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "val_set_size": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "profile_steps": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "max_steps": (lambda v: _integer(v) and (v == -1 or v >= 1), "-1 (train --num_epochs) or an integer >= 1"),
    "save_total_limit": (lambda v: v is None or _integer(v) and v >= 1, "an integer >= 1 or None"),
}

DECODING_RULES = {
    "max_new_tokens": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "temperature": (lambda v: _number(v) and v >= 0, ">= 0"),
    "top_p": (lambda v: _number(v) and 0 < v <= 1, "in (0, 1]"),
    "top_k": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "num_beams": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "repetition_penalty": (lambda v: _number(v) and v > 0, "> 0"),
}

# --report_to name -> the package transformers needs for it
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive", "codecarbon": "codecarbon",
            "azure_ml": "azureml", "swanlab": "swanlab", "trackio": "trackio", "dagshub": "dagshub",
            "flyte": "flytekit", "kubeflow": "kubeflow"}


def require(rules: dict, flags: dict):
    for flag, (test, rule) in rules.items():
        if not test(flags[flag]):
            raise UserError(f"--{flag} must be {rule}, got {flags[flag]!r}")


def check_report_to(report_to):
    """none, auto (tensorboard if installed), all, or installed trackers, comma-separated."""
    if report_to is None:
        return
    for name in as_list(report_to):
        if name in ("none", "auto", "all"):
            continue
        if name not in TRACKERS:
            raise UserError(f"--report_to {name!r} is unknown; choose none, auto, all or {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"--report_to {name} needs the {TRACKERS[name]} package, which is not installed: "
                            f"pip install {TRACKERS[name]}, or pass --report_to none")


def check_finetune_flags(**flags):
    """Every finetune() flag whose range is known without loading data or a model."""
    require(FINETUNE_RULES, flags)
    epochs, steps = flags["num_epochs"], flags["max_steps"]
    if not (_integer(steps) and steps > 0) and not (_number(epochs) and epochs > 0):
        raise UserError(f"--num_epochs must be > 0 unless --max_steps is, got {epochs!r}")
    check_report_to(flags["report_to"])
    Prompter(flags["prompt_template_name"])
    check_method(flags)
    check_lora_variant(flags)


INITS = ("default", "gaussian", "olora", "pissa")


METHODS = ("lora", "full")


def check_method(flags: dict):
    """--method full trains every weight: in 16/32-bit, on one device per process, with no LoRA options."""
    method = flags["method"]
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "full":
        return
    if flags["quantization"] != "none":
        raise UserError(f"--method full trains every weight, which a {flags['quantization']} base cannot; pass "
                        "--quantization none (bf16 on a GPU)")
    if flags["fsdp"] or flags["device_map"]:
        raise UserError("--method full runs one whole model per process here; drop --fsdp / --device_map")
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise UserError("--method full trains in bf16 (weights and optimizer states), which this GPU lacks; fp16 "
                        "weights cannot be trained by the Trainer's gradient scaler")
    lora = [f"--{k}" for k, default in (("lora_target_modules", None), ("use_dora", False), ("use_rslora", False),
                                        ("init_lora_weights", "default")) if flags[k] != default]
    if lora:
        raise UserError(f"{', '.join(lora)}: LoRA options, but --method full trains no adapter")


def check_lora_variant(flags: dict):
    """--use_dora, --use_rslora and --init_lora_weights: peft's LoRA variants, and where each can run."""
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
        raise UserError("--use_dora and --init_lora_weights other than default run on one process and one device "
                        "here; drop --fsdp / --device_map")


def check_quantization(quantization: str):
    """Fail before any loading if the requested precision cannot run here."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown --quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        raise UserError(f"--quantization {quantization} needs a working bitsandbytes ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); install it or pass --quantization none") from None
    if not torch.cuda.is_available():
        print(f"warning: no CUDA device; {quantization} runs on bitsandbytes' CPU path, which is slow", flush=True)


def check_attention(attn_implementation: str):
    """Fail before any loading if the attention implementation cannot train here."""
    if attn_implementation not in ATTENTIONS:
        raise UserError(f"unknown --attn_implementation {attn_implementation!r}; choose one of {', '.join(ATTENTIONS)}")
    import torch

    if attn_implementation == "flex_attention" and not torch.cuda.is_available():
        raise UserError("--attn_implementation flex_attention trains only on a GPU (PyTorch has no CPU backward for it)")
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UserError("--attn_implementation flash_attention_2 needs the flash-attn package (pip install flash-attn)")


def check_device_map(device_map):
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UserError(f"unknown --device_map {device_map!r}; choose {' or '.join(DEVICE_MAPS)} (or leave it out)")
