"""Checks of flag values that a type alone cannot express, run before any data or model loads.

finetune's flags carry their range rules in its config (train/config.py); `decoding_kwargs` (generate.py's
first step) checks DECODING_RULES the same way (alpaca_cot/config.py's require). --quantization,
--attn_implementation and --device_map are checked against what can run here (finetune, generate, the export).
Each failure is a one-line `UserError` naming the flag and value.
"""

import importlib.util

from alpaca_cot.cli import UserError, as_list
from alpaca_cot.config import AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY

QUANTIZATIONS = ("8bit", "4bit", "none")
# transformers' attention implementations that honour padding-free packing (position ids restarting
# at every record); flash_attention_2 needs the flash-attn package.
ATTENTIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2")
DEVICE_MAPS = ("cpu", "auto")


DECODING_RULES = {"max_new_tokens": POSITIVE_INT, "temperature": NON_NEGATIVE, "top_p": PROBABILITY, "top_k": COUNT,
                  "num_beams": AT_LEAST_ONE, "repetition_penalty": POSITIVE}

# --report_to name -> the package transformers needs for it
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive", "codecarbon": "codecarbon",
            "azure_ml": "azureml", "swanlab": "swanlab", "trackio": "trackio", "dagshub": "dagshub",
            "flyte": "flytekit", "kubeflow": "kubeflow"}


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
