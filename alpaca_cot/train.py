"""LoRA fine-tuning under the Hugging Face Trainer: the body of finetune.py.

Checks every flag and the data before any model is loaded, tokenises once with the prompt
masked out of the loss, pads each batch dynamically (multiple of 8) with length grouping (or
packs it padding-free), and saves the adapter so that a crash mid-save never leaves a
half-written file behind.
Runs as one process or under torchrun / torch.distributed.launch (one process per GPU).
"""

import inspect
import json
import time
from pathlib import Path

import torch

from . import checkpoints
from . import data as data_registry
from . import models
from .checks import check_finetune_flags
from . import recipes, resumable
from .cli import UserError
from .io import write_json_atomic
from .conversation import encode_records
from .mixture import prepare as prepare_data
from .preprocess import prompt_overhead
from .prompter import Prompter

def log(*args):
    if models.is_main_process():
        print(*args, flush=True)


def _as_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).strip("[]").replace("'", "").split(",") if v.strip()]


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


class CountingCollator:
    """Builds each micro-batch and counts its real and padded tokens on the CPU (no GPU sync).

    Padded: DataCollatorForSeq2Seq, right-padded to a multiple of 8. Packed (padding-free):
    transformers' DataCollatorWithFlattening puts the records side by side in one row with position
    ids restarting at each record; with no attention mask and no KV cache, transformers then keeps
    attention inside each record, and the first label of each record is masked so that no record
    learns to predict the next one.
    """

    def __init__(self, tokenizer, *, packing=False, collate=None, pad_to: int | None = None):
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        if collate is None and packing:
            collate = DataCollatorWithFlattening(return_tensors="pt")
        # pad_to: every record padded to that length, as the 2023 recipe's tokenizer(padding="max_length") did.
        padding = dict(padding="max_length", max_length=pad_to) if pad_to else dict(padding=True, pad_to_multiple_of=8)
        self.collate = collate or DataCollatorForSeq2Seq(tokenizer, return_tensors="pt", label_pad_token_id=-100,
                                                         **padding)
        self.real_tokens = self.padded_tokens = 0

    def __call__(self, features):
        batch = self.collate(features)
        mask = batch.get("attention_mask")
        self.real_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.padded_tokens += batch["input_ids"].numel()
        return batch


def all_ranks_sum(values: list[int]) -> list[int]:
    """Sum counts over the processes of a distributed run (each rank collates its own batches)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    device = f"cuda:{models.local_rank()}" if torch.distributed.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return [int(v) for v in total.tolist()]


def throughput_callback(collator: CountingCollator, warmup_steps: int):
    """Steady-state training speed: tokens (all processes') and seconds (rank 0's) from the end of step
    `warmup_steps` to the end, less the time and tokens of evaluations in between."""
    from transformers import TrainerCallback

    def sync(gpu=True):
        if gpu and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter(), collator.real_tokens, collator.padded_tokens

    class Throughput(TrainerCallback):
        start = last = window = None
        steps = 0
        evaluation = (0.0, 0, 0)  # seconds and tokens spent evaluating inside the window, left out

        def on_train_begin(self, args, state, control, **kw):
            self.first_step = state.global_step  # later than 0 when resuming
            if torch.cuda.is_available():  # training's peak, not loading's (quantizing on load peaks higher)
                torch.cuda.reset_peak_memory_stats()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == self.first_step + warmup_steps:
                self.start = sync()
            # No GPU sync here: that would stall every step; the error is the step's unfinished tail.
            self.last = sync(gpu=False) if self.start is not None and args.eval_strategy != "no" else None

        def on_evaluate(self, args, state, control, **kw):
            if self.last is not None:  # evaluation runs right after a step's end
                now = sync()
                self.evaluation = tuple(e + n - l for e, n, l in zip(self.evaluation, now, self.last))

        def on_train_end(self, args, state, control, **kw):
            end = sync()
            self.steps = state.global_step - self.first_step - warmup_steps
            if self.start is not None and self.steps > 0:
                seconds, real, padded = (e - s - x for e, s, x in zip(end, self.start, self.evaluation))
                self.window = (seconds, *all_ranks_sum([real, padded]))

        def metrics(self) -> dict:
            if self.window is None or self.window[0] <= 0 or self.window[2] <= 0:
                return {}  # no step measured (a short or resumed run)
            seconds, real, padded = self.window
            out = {"real_tokens_per_s": round(real / seconds, 1), "padded_tokens_per_s": round(padded / seconds, 1),
                   "padding_share": round(1 - real / padded, 4), "measured_steps": self.steps}
            if torch.cuda.is_available():
                out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            return out

    return Throughput()


def default_micro_batch_size(quantization: str, fused_kernels: bool) -> int:
    """bf16 with fused kernels fits 32 records of up to 512 tokens of a 7B shape on an 80 GB card and
    runs faster than at 16; without them 32 does not fit (benchmarks/README.md)."""
    return 32 if quantization == "none" and fused_kernels else 16


def default_gradient_checkpointing(quantization: str) -> bool:
    """On for 4-bit, whose users pick it to fit a small GPU (a fraction of the memory, at a third less
    speed: benchmarks/README.md). Off otherwise: 16-bit and 8-bit need a large card either way."""
    return quantization == "4bit"


def tokenise(columns, tokenizer, prompter, cutoff_len, train_on_inputs, val_set_size, seed, train_on_history=True):
    """Train and validation sets of input_ids/labels/length; reports cut and dropped records."""
    from datasets import Dataset

    dataset = Dataset.from_dict(columns).map(
        encode_records, batched=True, batch_size=1000, remove_columns=list(columns),
        fn_kwargs=dict(tokenizer=tokenizer, prompter=prompter, cutoff_len=cutoff_len, train_on_inputs=train_on_inputs,
                       train_on_history=train_on_history),
        desc="tokenising", disable_nullable=True)
    too_long = sum(dataset["prompt_too_long"])
    if too_long:
        dataset = dataset.filter(lambda b: [not x for x in b], input_columns="prompt_too_long", batched=True)
        log(f"dropped {too_long} records whose prompt alone reaches cutoff_len {cutoff_len}")
    if len(dataset) <= val_set_size:
        raise UserError(f"no training data left after dropping over-long prompts ({len(dataset)} records)")
    truncated = sum(dataset["truncated"])
    log(f"{len(dataset)} records, {sum(dataset['length'])} tokens; {truncated} "
        f"({100 * truncated / len(dataset):.1f}%) truncated at cutoff_len {cutoff_len}")
    dataset = dataset.remove_columns(["truncated", "prompt_too_long"])
    if val_set_size > 0:
        split = dataset.train_test_split(test_size=val_set_size, shuffle=True, seed=seed)
        return split["train"], split["test"]
    return dataset.shuffle(seed=seed), None


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
               target_modules, fused_kernels=False, attn_implementation="sdpa", upcast_norms=False):
    """The base model, quantized or not, wrapped with a fresh LoRA adapter."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = models.load_model(name, quantization, attn_implementation=attn_implementation)
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


def finetune(
    base_model: str = None,
    size: int = 7,
    data: str = "cot",
    output_dir: str = None,
    recipe: str = None,
    quantization: str = "8bit",
    # training
    batch_size: int = 128,
    micro_batch_size: int = None,
    num_epochs: float = 3,
    learning_rate: float = 3e-4,
    cutoff_len: int = 512,
    val_set_size: int = 2000,
    warmup_steps: int = 100,
    eval_steps: int = 200,
    save_steps: int = 200,
    save_total_limit: int = 3,
    max_steps: int = -1,
    logging_steps: int = 10,
    seed: int = 42,
    gradient_checkpointing: bool = None,
    fused_kernels: bool = None,
    packing: bool = False,
    pad_to_cutoff: bool = None,
    upcast_norms: bool = None,
    attn_implementation: str = "sdpa",
    # lora
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_target_modules=None,
    # data and prompt
    prompt_template_name: str = "alpaca",
    train_on_inputs: bool = None,
    train_on_history: bool = True,
    max_records_per_source: int = None,
    dedup: str = "none",
    decontaminate: str = None,
    group_by_length: bool = None,
    skip_bad_records: bool = False,
    # run
    resume_from_checkpoint: str = None,
    overwrite: bool = False,
    report_to: str = "auto",
    local_rank: int = None,  # passed by torch.distributed.launch; the env var LOCAL_RANK is what counts
):
    """Fine-tune a LLaMA-family model with LoRA on instruction data and save the adapter.

    Flags left unset take the recipe's values: the default recipe is this project's corrected, fast one;
    --recipe 2023 is the original Alpaca-CoT finetune.py's (micro-batch 4, gradient checkpointing with fp32
    norms, every record padded to cutoff_len, loss on prompt and response, no length grouping).

    Args:
        base_model: local folder, hub id (org/name or gpt2), .gguf file or preset of the base model; wins over --size.
        size: LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.
        data: dataset names joined by - (alpaca-belle-cot), or .json/.jsonl files, comma-separated.
        output_dir: where the adapter is saved; saved-{data}{size}b, or saved-{data}-{base name} with --base_model.
        recipe: default, or 2023 (the original Alpaca-CoT training recipe); explicit flags win.
        quantization: 8bit (the original recipe), 4bit (QLoRA) or none (bf16, fp32 on a CPU).
        batch_size: records per optimizer step, over all processes.
        micro_batch_size: records per forward pass on each GPU; 32 for bf16 with fused kernels, else 16.
        num_epochs: passes over the training data (ignored when --max_steps > 0).
        learning_rate: peak learning rate of the linear schedule.
        cutoff_len: longest record in tokens; longer ones are cut, and then end without EOS.
        val_set_size: records held out for evaluation (0: none).
        warmup_steps: optimizer steps of linear warm-up.
        eval_steps: evaluate every this many optimizer steps.
        save_steps: save a checkpoint every this many optimizer steps.
        save_total_limit: checkpoints kept in output_dir (None: all).
        max_steps: stop after this many optimizer steps (-1: run --num_epochs).
        logging_steps: log the loss every this many optimizer steps.
        seed: seeds the data split, the shuffling and the adapter's initialisation.
        gradient_checkpointing: recompute activations to save memory; on for 4bit only by default.
        fused_kernels: Liger's fused Triton kernels; on by default on a GPU with liger-kernel.
        packing: put each micro-batch's records in one row without padding.
        pad_to_cutoff: pad every record to --cutoff_len, as the 2023 recipe did (off: each batch to its longest).
        upcast_norms: peft's prepare_model_for_kbit_training: fp32 norms, embeddings and head around a quantized
            base, as the 2023 recipe did (off by default: far more memory at the same speed).
        attn_implementation: sdpa, eager, flex_attention or flash_attention_2.
        lora_r: rank of the LoRA matrices.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input, in [0, 1).
        lora_target_modules: modules that get an adapter, comma-separated, or all-linear; peft's defaults for
            the model's architecture when unset (q_proj,v_proj for LLaMA, query_key_value for BLOOM).
        prompt_template_name: a template in templates/ (alpaca).
        train_on_inputs: also train on the prompt, not only on the response (on with --recipe 2023).
        train_on_history: in multi-turn records, learn every assistant turn; False: only the last one.
        max_records_per_source: draw at most this many records from each --data source (with --seed).
        dedup: remove repeated prompts within and across sources: none (as given), exact or near (MinHash).
        decontaminate: evaluation files (.json/.jsonl, comma-separated) whose rows are removed from the data.
        group_by_length: batch records of similar length together (on; off with --recipe 2023).
        skip_bad_records: skip and count malformed records instead of stopping.
        resume_from_checkpoint: auto (the last checkpoint in output_dir) or a checkpoint folder.
        overwrite: replace an adapter already saved in output_dir.
        report_to: none, auto (tensorboard if installed), or an installed tracker such as wandb.
        local_rank: set by torch.distributed.launch; the LOCAL_RANK variable is what counts.
    """
    flags = recipes.apply(recipe, "finetune", locals())
    (micro_batch_size, gradient_checkpointing, fused_kernels, train_on_inputs, group_by_length, pad_to_cutoff,
     upcast_norms, lora_target_modules) = (flags[k] for k in (
        "micro_batch_size", "gradient_checkpointing", "fused_kernels", "train_on_inputs", "group_by_length",
        "pad_to_cutoff", "upcast_norms", "lora_target_modules"))
    check_finetune_flags(**flags)
    started = time.time()
    # Everything is checked before a model is loaded.
    name = models.base_model_name(size, base_model)
    models.check_quantization(quantization)
    models.check_attention(attn_implementation)
    fused_kernels = models.use_fused_kernels(fused_kernels)
    if micro_batch_size is None:
        micro_batch_size = default_micro_batch_size(quantization, fused_kernels)
    if gradient_checkpointing is None:
        gradient_checkpointing = default_gradient_checkpointing(quantization)
    world = models.world_size()
    for flag, value in (("batch_size", batch_size), ("micro_batch_size", micro_batch_size),
                        ("cutoff_len", cutoff_len), ("lora_r", lora_r)):
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"--{flag} must be a positive integer, got {value!r}")
    if batch_size % (micro_batch_size * world):
        raise UserError(f"--batch_size {batch_size} must be a multiple of --micro_batch_size {micro_batch_size}"
                        f" x {world} processes")
    accumulation = batch_size // (micro_batch_size * world)
    if packing and pad_to_cutoff:
        raise UserError("--packing and --pad_to_cutoff exclude each other: packing pads nothing")
    output_dir = Path(output_dir or checkpoints.default_output_dir(data, size, base_model))
    if resume_from_checkpoint not in (None, False, "auto", True) and not Path(str(resume_from_checkpoint)).is_dir():
        raise UserError(f"--resume_from_checkpoint {resume_from_checkpoint} is not a folder")
    checkpoints.check_writable(output_dir)
    prompter = Prompter(prompt_template_name)
    files, columns = prepare_data(data, seed=seed, skip_bad_records=skip_bad_records, log=log, dedup_mode=dedup,
                                  max_records_per_source=max_records_per_source, decontaminate=decontaminate)
    tokenizer = models.load_tokenizer(name)
    tokenizer.padding_side = "right"
    overhead = prompt_overhead(tokenizer, prompter)
    if cutoff_len <= overhead:
        raise UserError(f"--cutoff_len {cutoff_len} is smaller than the prompt template alone ({overhead} tokens)")
    n_records = len(columns["output"])
    if val_set_size >= n_records:
        raise UserError(f"--val_set_size {val_set_size} leaves no training data ({n_records} records); lower it")
    target_modules = models.target_modules(name, _as_list(lora_target_modules) if lora_target_modules else None)

    config = dict(base_model=name, data=data, recipe=recipe or "default", files=[str(p) for p in files],
                  output_dir=str(output_dir), quantization=quantization, batch_size=batch_size,
                  micro_batch_size=micro_batch_size, gradient_accumulation_steps=accumulation, world_size=world,
                  num_epochs=num_epochs, max_steps=max_steps, learning_rate=learning_rate, cutoff_len=cutoff_len,
                  val_set_size=val_set_size, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                  lora_target_modules=target_modules, prompt_template=prompt_template_name,
                  train_on_inputs=train_on_inputs, train_on_history=train_on_history, dedup=dedup,
                  max_records_per_source=max_records_per_source, decontaminate=decontaminate,
                  group_by_length=group_by_length,
                  gradient_checkpointing=gradient_checkpointing, fused_kernels=fused_kernels, packing=packing,
                  pad_to_cutoff=pad_to_cutoff, upcast_norms=upcast_norms, attn_implementation=attn_implementation,
                  resume_from_checkpoint=resume_from_checkpoint, warmup_steps=warmup_steps,
                  skip_bad_records=skip_bad_records, seed=seed, records=n_records)
    log("alpaca-cot finetune\n" + json.dumps(config, indent=2, ensure_ascii=False))
    record = checkpoints.run_record(config, files)
    plan = checkpoints.plan(output_dir, record, name, resume_from_checkpoint, overwrite, warn=log)

    if packing and attn_implementation in ("sdpa", "eager") and torch.cuda.is_available():
        log("note: with --packing, sdpa and eager attend over the whole packed row through a mask; on an H200 "
            "that trained slower than padding (benchmarks/README.md); flash_attention_2 attends per record")
    train_data, val_data = tokenise(columns, tokenizer, prompter, cutoff_len, train_on_inputs, val_set_size, seed,
                                    train_on_history)

    from transformers import set_seed

    set_seed(seed)  # before the adapter's random initialisation, so that --seed reproduces a run
    model = lora_model(name, quantization, tokenizer, gradient_checkpointing, lora_r, lora_alpha, lora_dropout,
                       target_modules, fused_kernels, attn_implementation, upcast_norms)

    use_cuda = torch.cuda.is_available()
    dtype = models.compute_dtype(quantization)
    evaluate = val_data is not None
    args = _training_args(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=micro_batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        bf16=use_cuda and dtype == torch.bfloat16,
        fp16=use_cuda and dtype == torch.float16,
        use_cpu=not use_cuda,
        logging_steps=logging_steps,
        optim="adamw_torch",
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        load_best_model_at_end=evaluate and save_steps % eval_steps == 0,
        ddp_find_unused_parameters=False if world > 1 else None,
        ddp_backend="gloo" if world > 1 and not use_cuda else None,
        group_by_length=group_by_length,
        length_column_name="length",
        report_to=_report_to(report_to),
        seed=seed,
        data_seed=seed,
        remove_unused_columns=True,
        label_names=["labels"],
    )
    collator = CountingCollator(tokenizer, packing=packing, pad_to=cutoff_len if pad_to_cutoff else None)
    speed = throughput_callback(collator, warmup_steps=min(5, max(1, (max_steps if max_steps > 0 else 50) // 5)))
    trainer = resumable.trainer_class()(model=model, args=args, train_dataset=train_data, eval_dataset=val_data,
                                        data_collator=collator, processing_class=tokenizer,
                                        callbacks=[speed, resumable.log_at_saves_callback()])
    main_process_then_others(lambda: checkpoints.claim(output_dir, record, plan))
    if plan.note:
        log(plan.note)
    result = trainer.train(resume_from_checkpoint=str(plan.resume) if plan.resume else None)

    if trainer.is_world_process_zero():
        checkpoints.save_adapter(model, tokenizer, output_dir)
        write_summary(output_dir, result.metrics, trainer.state.log_history, speed.metrics(),
                      seconds=round(time.time() - started, 1), output_dir=str(output_dir), quantization=quantization)
    return trainer


def main_process_then_others(fn):
    """fn on the main process while the others wait (they have read the output folder already)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        torch.distributed.barrier()
    if models.is_main_process():
        fn()
    if distributed:
        torch.distributed.barrier()


def write_summary(folder: Path, metrics: dict, log_history: list[dict], speed: dict, **extra):
    """train_summary.json, with the loss of the whole run (resumed parts and every rank included)."""
    summary = dict(metrics, **speed, **extra)
    loss = resumable.run_loss(log_history)
    if loss is not None:
        summary["train_loss"] = loss
    write_json_atomic(summary, folder / "train_summary.json")
    if speed:
        log("speed: " + ", ".join(f"{k} {v}" for k, v in speed.items()))
    log(f"saved the adapter to {folder} in {summary.get('seconds')} s")
