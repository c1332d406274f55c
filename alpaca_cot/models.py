"""Model-loading rules, in one place: which checkpoint, which precision, which device.

finetune.py, generate.py, the export script and the benchmark all load through here.
"""

import importlib.util
import logging
import os
import re
from pathlib import Path

import torch

from . import gguf
from .cli import UserError

# --size -> default checkpoint (the 2023 repo's decapoda-research ids are gone from the hub).
SIZES = {7: "huggyllama/llama-7b", 13: "huggyllama/llama-13b", 30: "huggyllama/llama-30b", 65: "huggyllama/llama-65b"}
QUANTIZATIONS = ("8bit", "4bit", "none")
# transformers' attention implementations that honour padding-free packing (position ids restarting
# at every record); flash_attention_2 needs the flash-attn package.
ATTENTIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2")


def base_model_name(size=7, base_model=None) -> str:
    """--base_model wins over --size; a path-like value must exist locally. A preset name
    (smollm2-135m) or a .gguf file resolves to its cached safetensors checkpoint."""
    if base_model:
        name = str(base_model)
        if name in gguf.PRESETS:
            return gguf.checkpoint(gguf.preset_file(name))
        if name.endswith(".gguf"):
            return gguf.checkpoint(name)
        if Path(name).expanduser().exists():  # absolute, so that a saved adapter names a base that loads anywhere
            return str(Path(name).expanduser().resolve())
        if not is_hub_id(name):
            raise UserError(f"base model {name} not found (not a local folder, a hub id like org/name or gpt2, "
                            f"a .gguf file, nor a preset: {', '.join(gguf.PRESETS)})")
        check_hub_reachable(name)
        return name
    try:
        name = SIZES[int(size)]
    except (KeyError, ValueError, TypeError):
        raise UserError(f"unknown --size {size!r}; choose one of {', '.join(map(str, SIZES))} or pass --base_model") from None
    check_hub_reachable(name)
    return name


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(name: str) -> bool:
    """org/name or a bare name (gpt2) that is not on this machine; org/name whose org is a local folder is
    a missing local path instead."""
    name = str(name)
    if Path(name).expanduser().exists() or not HUB_ID.fullmatch(name) or name.endswith((".json", ".gguf")):
        return False
    return "/" not in name or not Path(name.split("/")[0]).is_dir()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_reachable(name: str, timeout: float = 5.0):
    """One line instead of the hub client's minute of retries when the hub cannot be reached (proxies honoured)."""
    if hub_offline():
        return
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models/{name}", method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return  # the hub answered (a private or missing repo is reported when loading)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot reach the hub ({endpoint}) for {name}: {getattr(e, 'reason', e)}; if it is "
                        "already downloaded, set HF_HUB_OFFLINE=1 to use the cached copy") from None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def compute_dtype(quantization: str = "none") -> torch.dtype:
    """bf16 where the GPU has it, fp16 on older GPUs, fp32 on the CPU. 8-bit computes in fp16:
    bitsandbytes' int8 matmul casts any other input to fp16 on every call."""
    if not torch.cuda.is_available():
        return torch.float32
    if quantization == "8bit" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def check_quantization(quantization: str):
    """Fail before any loading if the requested precision cannot run here."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown --quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return
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
    if attn_implementation == "flex_attention" and not torch.cuda.is_available():
        raise UserError("--attn_implementation flex_attention trains only on a GPU (PyTorch has no CPU backward for it)")
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UserError("--attn_implementation flash_attention_2 needs the flash-attn package (pip install flash-attn)")


def quantization_config(quantization: str, sharded: bool = False):
    """bitsandbytes' settings; sharded (FSDP) 4-bit weights are packed into bf16 storage, which FSDP
    can split and gather like any bf16 tensor (uint8 storage it cannot)."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        extra = {"bnb_4bit_quant_storage": torch.bfloat16} if sharded else {}
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype("4bit"), **extra)
    return None


def configure_backends():
    """cuDNN attention rebuilds a graph for every new sequence shape: with dynamic padding and
    generation that halves throughput (see STACK.md), so SDPA uses flash/efficient kernels."""
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the tokenizer of {name}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        # LLaMA has no pad token; unk (0) is never a target, and padded positions are masked anyway.
        tokenizer.pad_token_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    return tokenizer


DEVICE_MAPS = ("cpu", "auto")


def check_device_map(device_map):
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UserError(f"unknown --device_map {device_map!r}; choose {' or '.join(DEVICE_MAPS)} (or leave it out)")


def _quiet_int8_casts(record) -> bool:
    return "inputs will be cast" not in record.getMessage()


def _quiet_missing_backends(record) -> bool:
    return "could not be imported" not in record.getMessage()


def quiet_liger_backends():
    """liger-kernel warns, at a kernel's first use, for each optional backend of other hardware (CuTe DSL,
    Ascend) that it cannot import: lines in every run that say nothing about this one."""
    logging.getLogger("liger_kernel.backends.registry").addFilter(_quiet_missing_backends)


def load_model(name: str, quantization: str = "none", dtype: torch.dtype | None = None,
               attn_implementation: str = "sdpa", device_map: str | None = None, sharded: bool = False):
    """The base causal LM, quantized or in 16/32-bit, on this process's device; or with device_map
    "cpu" on the CPU, or "auto" with its layers split over the visible GPUs (then the CPU), which is
    how a model larger than one GPU runs in one process (the 2023 code's way for 65B). sharded (FSDP):
    a 16-bit model stays on the CPU (rank 0 alone reads the weights; FSDP sends each GPU its shard),
    a 4-bit one is quantized on this process's GPU, as bitsandbytes must, and FSDP shards it there."""
    from transformers import AutoModelForCausalLM

    configure_backends()
    dtype = dtype or compute_dtype(quantization)
    if quantization == "8bit":  # one log line per int8 matmul otherwise (thousands); added once per process
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_quiet_int8_casts)
    # sdpa is transformers' own choice where the architecture has it (BLOOM has not: eager then).
    kwargs = {"dtype": dtype, "attn_implementation": None if attn_implementation == "sdpa" else attn_implementation}
    if quantization != "none":
        kwargs["quantization_config"] = quantization_config(quantization, sharded)
        kwargs["device_map"] = {"": local_rank()} if torch.cuda.is_available() else {"": "cpu"}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as e:
        raise UserError(f"could not load base model {name}: {str(e).splitlines()[0]}") from None
    if quantization == "none" and device_map is None and not sharded and torch.cuda.is_available():
        model.to(f"cuda:{local_rank()}")
    return model


def use_fused_kernels(requested=None) -> bool:
    """Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) for LLaMA on a GPU:
    by default on where liger-kernel is installed (faster and smaller at every precision, measured in
    one run: benchmarks/README.md); an error if asked for where they cannot run."""
    try:
        import liger_kernel  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    if requested is None:
        return installed and torch.cuda.is_available()
    if requested and not (installed and torch.cuda.is_available()):
        raise UserError("--fused_kernels needs a CUDA GPU and liger-kernel (pip install liger-kernel)")
    return bool(requested)


def apply_fused_kernels(model):
    """Patch a loaded LLaMA in place (before the LoRA wrapper); other architectures are left alone."""
    if getattr(model.config, "model_type", None) != "llama":
        return model
    quiet_liger_backends()
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=model)
    return model

