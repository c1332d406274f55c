"""The Trainer: the Hugging Face Trainer over the LoRA model (models.lora_model), with its arguments, the
token-counting collator, the speed callback and the resumable sampler.
"""

import inspect
from types import SimpleNamespace

import torch

from alpaca_cot.model import models, sharding

from alpaca_cot.train import profiling, resumable
from alpaca_cot.train.throughput import CountingCollator, throughput_callback


def _training_args(**kwargs):
    """TrainingArguments across transformers 5.x: group_by_length became train_sampling_strategy. A keyword
    this transformers does not take raises: dropping it would change the run without a word."""
    import transformers
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    group = kwargs.pop("group_by_length")
    if "train_sampling_strategy" in params:
        kwargs["train_sampling_strategy"] = "group_by_length" if group else "random"
    else:
        kwargs["group_by_length"] = group
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"TrainingArguments of transformers {transformers.__version__} take no {', '.join(unknown)}")
    return TrainingArguments(**kwargs)


def _report_to(report_to):
    if report_to != "auto":
        return report_to
    try:
        import tensorboard  # noqa: F401
        return "tensorboard"
    except ImportError:
        return "none"


def build_trainer(run: SimpleNamespace, model, args):
    """A Trainer over the LoRA model, with the token-counting collator and the speed callback."""
    f = run.flags
    collator = CountingCollator(run.tokenizer, packing=f.packing, pad_to=f.cutoff_len if f.pad_to_cutoff else None)
    speed = throughput_callback(collator, accumulation=f.accumulation, untimed_last=f.profile_steps)
    callbacks = [speed, resumable.log_at_saves_callback()]
    if f.profile_steps:  # after the speed callback, whose window ends where profiling starts
        callbacks.append(profiling.profiler_callback(f.profile_steps, run.output_dir / "profile"))
    trainer = resumable.trainer_class()(model=model, args=args,
                                        train_dataset=run.train_data, eval_dataset=run.val_data,
                                        data_collator=collator, processing_class=run.tokenizer, callbacks=callbacks)
    return trainer, speed


# The Trainer's loop waits for the GPU twice per micro-batch: its NaN check of each step's loss, and the
# blocking copy of the next batch (after which the batch after it is collated while the GPU idles). With
# one micro-batch per optimizer step (several GPUs at the same global batch) that idle time is paid on
# every step. Non-blocking copies from pinned memory, and no NaN check (a NaN loss is then logged as NaN,
# not replaced), let the CPU prepare step k+1 while the GPU computes step k.
OVERLAP_STEPS = {"accelerator_config": {"non_blocking": True}, "dataloader_pin_memory": True,
                 "logging_nan_inf_filter": False}


def training_args(f: SimpleNamespace, evaluate: bool):
    """The TrainingArguments of a run; with --fsdp they carry FSDP's loading rules, so they come before the model."""
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
