"""The LoRA model and its Trainer: the base model wrapped with a fresh LoRA adapter (which modules it
adapts, checked before anything loads), and the Hugging Face Trainer over it (arguments, token-counting
collator, speed callback, resumable sampler).
"""

import inspect
from types import SimpleNamespace

import torch

from . import models, resumable, sharding
from .cli import UserError
from .throughput import CountingCollator, throughput_callback


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


def _training_args(**kwargs):
    """TrainingArguments across transformers 5.x: group_by_length became train_sampling_strategy."""
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    group = kwargs.pop("group_by_length")
    if "train_sampling_strategy" in params:
        kwargs["train_sampling_strategy"] = "group_by_length" if group else "random"
    else:
        kwargs["group_by_length"] = group
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in params})


def _report_to(report_to):
    if report_to != "auto":
        return report_to
    try:
        import tensorboard  # noqa: F401
        return "tensorboard"
    except ImportError:
        return "none"


def build_trainer(run: SimpleNamespace):
    """The LoRA model and a Trainer over it, with the token-counting collator and the speed callback."""
    from transformers import set_seed

    f = run.flags
    args = training_args(f, evaluate=run.val_data is not None)  # first: FSDP's loading rules come with it
    set_seed(f.seed)  # before the adapter's random initialisation, so that --seed reproduces a run
    model = lora_model(f.name, f.quantization, run.tokenizer, f.gradient_checkpointing, f.lora_r, f.lora_alpha,
                       f.lora_dropout, f.target_modules, f.fused_kernels, f.attn_implementation, f.upcast_norms,
                       device_map=f.device_map, sharded=f.fsdp)
    collator = CountingCollator(run.tokenizer, packing=f.packing, pad_to=f.cutoff_len if f.pad_to_cutoff else None)
    speed = throughput_callback(collator, warmup_steps=min(5, max(1, (f.max_steps if f.max_steps > 0 else 50) // 5)))
    trainer = resumable.trainer_class()(model=model, args=args,
                                        train_dataset=run.train_data, eval_dataset=run.val_data,
                                        data_collator=collator, processing_class=run.tokenizer,
                                        callbacks=[speed, resumable.log_at_saves_callback()])
    return trainer, speed


# The Trainer's loop waits for the GPU twice per micro-batch: its NaN check of each step's loss, and the
# blocking copy of the next batch (after which the batch after it is collated while the GPU idles). With
# one micro-batch per optimizer step (several GPUs at the same global batch) that idle time is paid on
# every step. Non-blocking copies from pinned memory, and no NaN check (a NaN loss is then logged as NaN,
# not replaced), let the CPU prepare step k+1 while the GPU computes step k.
OVERLAP_STEPS = {"accelerator_config": {"non_blocking": True}, "dataloader_pin_memory": True,
                 "logging_nan_inf_filter": False}


def training_args(f: SimpleNamespace, evaluate: bool):
    use_cuda = torch.cuda.is_available()
    dtype = models.compute_dtype(f.quantization)
    return _training_args(
        output_dir=str(f.output_dir), per_device_train_batch_size=f.micro_batch_size,
        per_device_eval_batch_size=f.micro_batch_size, gradient_accumulation_steps=f.accumulation,
        num_train_epochs=f.num_epochs, max_steps=f.max_steps, learning_rate=f.learning_rate,
        warmup_steps=f.warmup_steps, bf16=use_cuda and dtype == torch.bfloat16,
        fp16=use_cuda and dtype == torch.float16, use_cpu=not use_cuda, logging_steps=f.logging_steps,
        optim="adamw_torch", eval_strategy="steps" if evaluate else "no",
        eval_steps=f.eval_steps if evaluate else None, save_strategy="steps", save_steps=f.save_steps,
        save_total_limit=f.save_total_limit, load_best_model_at_end=evaluate and f.save_steps % f.eval_steps == 0,
        ddp_find_unused_parameters=False if f.world > 1 and not f.fsdp else None,
        ddp_backend="gloo" if f.world > 1 and not use_cuda else None, group_by_length=f.group_by_length,
        length_column_name="length", report_to=_report_to(f.report_to), seed=f.seed, data_seed=f.seed,
        remove_unused_columns=True, label_names=["labels"],
        **(sharding.fsdp_args(f.name, f.quantization) if f.fsdp else {}),
        **(OVERLAP_STEPS if f.overlap_steps and use_cuda else {}))
