"""The base model, quantized or not, wrapped with a fresh LoRA adapter for training."""

from . import models, sharding
from .cli import UserError


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


def lora_model(name, quantization, tokenizer, gradient_checkpointing, lora_r, lora_alpha, lora_dropout,
               target_modules, fused_kernels=False, attn_implementation="sdpa", upcast_norms=False,
               device_map=None, sharded=False):
    """The base model, quantized or not, wrapped with a fresh LoRA adapter. sharded (FSDP): placement is left
    to FSDP (sharding.fsdp_args)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if sharded:
        sharding.before_loading(quantization)
    model = models.load_model(name, quantization, attn_implementation=attn_implementation, device_map=device_map,
                              sharded=sharded)
    if fused_kernels:
        models.apply_fused_kernels(model)
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
                      bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as e:
        raise UserError(f"--lora_target_modules {target_modules}: {str(e).splitlines()[0]}") from None
    if models.is_main_process():
        model.print_trainable_parameters()
    return model
