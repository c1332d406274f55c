"""Range checks of flag values that a type alone cannot express, run before any data or model loads.

finetune() calls `check_finetune_flags` first, and `decoding_kwargs` (generate.py's first step)
checks DECODING_RULES; each failure is a one-line `UserError` naming the flag and value.
"""

import importlib.util

from .cli import UserError, as_list
from .preprocess import Prompter


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
