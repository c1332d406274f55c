"""The model: which checkpoint, which precision, which device, and for training the base wrapped with a fresh
LoRA adapter (which modules it adapts, checked from the config before anything loads).

finetune.py, generate.py, the export script and the benchmark all load through here.
"""

import logging
import os
from pathlib import Path

import torch

from alpaca_cot.model import gguf, kernels, sharding

from alpaca_cot import hub
from alpaca_cot.cli import UserError

# --size -> default checkpoint (the 2023 repo's decapoda-research ids are gone from the hub).
SIZES = {7: "huggyllama/llama-7b", 13: "huggyllama/llama-13b", 30: "huggyllama/llama-30b", 65: "huggyllama/llama-65b"}


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
        if not hub.is_hub_id(name):
            raise UserError(f"base model {name} not found (not a local folder, a hub id like org/name or gpt2, "
                            f"a .gguf file, nor a preset: {', '.join(gguf.PRESETS)})")
        hub.check_hub_reachable(name)
        return name
    try:
        name = SIZES[int(size)]
    except (KeyError, ValueError, TypeError):
        raise UserError(f"unknown --size {size!r}; choose one of {', '.join(map(str, SIZES))} or pass --base_model") from None
    hub.check_hub_reachable(name)
    return name


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


def _quiet_int8_casts(record) -> bool:
    return "inputs will be cast" not in record.getMessage()


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


def target_modules(name: str, requested=None) -> list[str] | str:
    """The modules LoRA adapts: those requested (each must exist in the model; `all-linear` is peft's every
    linear layer but the head), or peft's defaults for the model's architecture. Read from the config alone,
    on the meta device, before anything is loaded."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    from transformers import AutoConfig, AutoModelForCausalLM

    if requested == "all-linear" or requested == ["all-linear"]:
        return "all-linear"
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return requested  # loading the model reports it
    if not requested:
        if config.model_type not in DEFAULTS:
            raise UserError(f"peft has no default LoRA modules for model type {config.model_type}; pass "
                            "--lora_target_modules (module names, or all-linear)")
        return list(DEFAULTS[config.model_type])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    present = {module.split(".")[-1] for module, _ in model.named_modules()}
    missing = [m for m in requested if m not in present]
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if "Linear" in type(m).__name__ or
                         "Conv1D" in type(m).__name__})
        raise UserError(f"--lora_target_modules {','.join(missing)}: no such module in {name} "
                        f"({config.model_type}); its linear modules: {', '.join(linear)}")
    return list(requested)


def align_special_tokens(model, tokenizer):
    """Give the model config the tokenizer's PAD/BOS/EOS ids, as the Trainer would, without its warning."""
    try:
        from transformers.trainer_utils import align_special_tokens as align
    except ImportError:
        return
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        align(model, tokenizer)
    finally:
        hf_logging.set_verbosity(verbosity)


def enable_checkpointing(model):
    """Gradient checkpointing under the name this transformers has (the old one warns in 5.2x)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def full_model(name, tokenizer, gradient_checkpointing=False, fused_kernels=False, attn_implementation="sdpa"):
    """The base model with every weight trainable (--method full): bf16 on a GPU (weights and AdamW states, as
    single-GPU peers train; no fp32 master copy), fp32 on the CPU."""
    model = load_model(name, "none", attn_implementation=attn_implementation)
    if fused_kernels:
        kernels.apply_fused_kernels(model)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise UserError(f"the tokenizer of {name} has {len(tokenizer)} tokens, more than the model's embeddings")
    align_special_tokens(model, tokenizer)
    if gradient_checkpointing:
        enable_checkpointing(model)
    model.config.use_cache = False
    model.requires_grad_(True)
    return model


def lora_variant(use_dora=False, use_rslora=False, init_lora_weights="default") -> dict:
    """LoraConfig's arguments for --use_dora, --use_rslora and --init_lora_weights."""
    init = True if init_lora_weights == "default" else init_lora_weights
    return {"use_dora": use_dora, "use_rslora": use_rslora, "init_lora_weights": init}


def converts_on_save(init_lora_weights: str) -> bool:
    """PiSSA and OLoRA change the base weights they start from; their adapters are saved converted."""
    return str(init_lora_weights).startswith(("pissa", "olora"))


def lora_model(name, quantization, tokenizer, gradient_checkpointing, lora_r, lora_alpha, lora_dropout,
               target_modules, fused_kernels=False, attn_implementation="sdpa", upcast_norms=False,
               device_map=None, sharded=False, variant: dict | None = None):
    """The base model, quantized or not, wrapped with a fresh LoRA adapter. sharded (FSDP): placement is left
    to FSDP (sharding.fsdp_args). variant: peft's LoRA variants (lora_variant)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if sharded:
        sharding.before_loading(quantization)
    model = load_model(name, quantization, attn_implementation=attn_implementation, device_map=device_map,
                       sharded=sharded)
    if fused_kernels:
        kernels.apply_fused_kernels(model)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise UserError(f"the tokenizer of {name} has {len(tokenizer)} tokens, more than the model's embeddings")
    align_special_tokens(model, tokenizer)
    # peft's prepare_model_for_kbit_training only with upcast_norms (the 2023 recipe): it upcasts norms,
    # embeddings and the LM head to fp32, so every activation after a norm becomes fp32 (int8 matmuls
    # then cast it back, and SDPA leaves its fast kernels), for much more memory at the same speed
    # (benchmarks/README.md). get_peft_model freezes the base either way.
    if upcast_norms and quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_checkpointing(model)
    model.config.use_cache = False  # training needs no KV cache; packing needs its absence too
    lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                      bias="none", task_type="CAUSAL_LM", **(variant or {}))
    try:
        model = get_peft_model(model, lora)
    except ValueError as e:
        raise UserError(f"--lora_target_modules {target_modules}: {str(e).splitlines()[0]}") from None
    if is_main_process():
        model.print_trainable_parameters()
    return model
