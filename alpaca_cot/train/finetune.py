"""LoRA fine-tuning under the Hugging Face Trainer: the body of finetune.py.

finetune() reads as its steps: resolve (every flag checked against its config, train/config.py, defaults
decided) -> prepare (data/loader.py: the records read, checked and drawn; data/preprocess.py: tokenised once
with the prompt masked out of the loss; the output folder planned) -> build (model/methods.py: the LoRA or
fully trained model; trainer.py: the collator, the Trainer) -> train -> save (the method's unit: the adapter
or the whole model; train_summary.json). Nothing loads a model before prepare is done.
Runs as one process or under torchrun / torch.distributed.launch (one process per GPU).
"""

import hashlib
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from alpaca_cot import config, io, outputs
from alpaca_cot.cli import UserError, as_list
from alpaca_cot.data.catalog import resolve as resolve_data
from alpaca_cot.data.loader import load_mixture
from alpaca_cot.data.preprocess import Prompter, prompt_overhead, tokenise
from alpaca_cot.model import kernels, methods, models, offload, sharding
from alpaca_cot.model.checks import check_attention, check_quantization, check_report_to
from alpaca_cot.model.kernels import use_fused_kernels
from alpaca_cot.train import checkpoints, distributed, recipes
from alpaca_cot.train.config import FinetuneConfig
from alpaca_cot.train.trainer import build_trainer, training_args


def log(*args):
    if models.is_main_process():
        print(*args, flush=True)


def finetune(**flags):
    """Fine-tune a LLaMA-family model with LoRA on instruction data and save the adapter: the flags are
    FinetuneConfig's fields (train/config.py), which also make this function's signature and `--help`."""
    flags = recipes.apply(flags.get("recipe"), "finetune", vars(FinetuneConfig(**flags)))
    check_finetune_flags(**flags)
    started = time.time()
    run = prepare(resolve(flags))  # every flag, the data and the output folder checked before a model loads
    distributed.start()
    trainer, speed = build(run)
    trainer.balance_ranks = run.flags.balance_ranks
    # A disk that fills up during the run: one line, not a traceback; the last complete checkpoint resumes.
    with io.write_errors(run.output_dir, any_oserror=False, note="free some space and resume with "
                         "--resume_from_checkpoint auto"):
        distributed.main_process_then_others(lambda: checkpoints.claim(run.output_dir, run.record, run.plan))
        if run.plan.note:
            log(run.plan.note)
        initial = save_initial_adapter(trainer.model, run)
        result = trainer.train(resume_from_checkpoint=str(run.plan.resume) if run.plan.resume else None)
        adapter = sharding.adapter_state_dict(trainer)  # every rank takes part in gathering a sharded adapter
        if trainer.is_world_process_zero():
            methods.method(run.flags.method).save(trainer.model, run.tokenizer, run.output_dir, state_dict=adapter,
                                                  initial=initial)
            if initial is not None:
                shutil.rmtree(initial, ignore_errors=True)
            checkpoints.write_summary(run.output_dir, result.metrics, trainer.state.log_history, speed.metrics(),
                                      log=log, seconds=round(time.time() - started, 1),
                                      output_dir=str(run.output_dir), quantization=run.flags.quantization)
    distributed.end()
    return trainer



finetune.__signature__ = config.signature(FinetuneConfig)


def check_finetune_flags(**flags):
    """Every flag whose range is known without loading data or a model: the config's rules, then the rest."""
    config.check(FinetuneConfig(**flags))
    epochs, steps = flags["num_epochs"], flags["max_steps"]
    if not (config.integer(steps) and steps > 0) and not (config.number(epochs) and epochs > 0):
        raise UserError(f"--num_epochs must be > 0 unless --max_steps is, got {epochs!r}")
    check_report_to(flags["report_to"])
    Prompter(flags["prompt_template_name"])
    methods.method(flags["method"]).check(flags)


INITIAL_ADAPTER = "initial_adapter"  # peft names an adapter after its folder: no dots


def save_initial_adapter(model, run) -> Path | None:
    """PiSSA and OLoRA: the adapter as initialised, before any step (a resumed run rebuilds the same one from
    the same base), which the final save converts against."""
    if not models.converts_on_save(run.flags.init_lora_weights):
        return None
    folder = run.output_dir / INITIAL_ADAPTER
    if models.is_main_process():
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder)
    return folder


def resolve(flags: dict) -> SimpleNamespace:
    """The flags with their defaults decided and checked: what can run here, batch arithmetic, folders."""
    f = SimpleNamespace(**flags)
    f.name = models.base_model_name(f.size, f.base_model)
    f.world = models.world_size()
    sharding.check_flags(f.fsdp, f.device_map, f.quantization, f.world, f.fused_kernels)  # before any warning
    check_quantization(f.quantization)
    check_attention(f.attn_implementation)
    f.fused_kernels = use_fused_kernels(False if f.fsdp or f.device_map else f.fused_kernels)
    if f.micro_batch_size is None:
        f.micro_batch_size = recipes.default_micro_batch_size(f.quantization, f.fused_kernels)
    if f.gradient_checkpointing is None:
        f.gradient_checkpointing = recipes.default_gradient_checkpointing(f.quantization)
    if f.offload_activations and not f.gradient_checkpointing:
        raise UserError("--offload_activations offloads the checkpointed layer inputs: it needs --gradient_checkpointing")
    for flag in ("batch_size", "micro_batch_size", "cutoff_len", "lora_r"):
        value = getattr(f, flag)
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"--{flag} must be a positive integer, got {value!r}")
    if f.batch_size % (f.micro_batch_size * f.world):
        raise UserError(f"--batch_size {f.batch_size} must be a multiple of --micro_batch_size {f.micro_batch_size}"
                        f" x {f.world} processes")
    f.accumulation = f.batch_size // (f.micro_batch_size * f.world)
    if f.packing and f.pad_to_cutoff:
        raise UserError("--packing and --pad_to_cutoff exclude each other: packing pads nothing")
    f.output_dir = Path(f.output_dir or checkpoints.default_output_dir(f.data, f.size, f.base_model))
    resume = f.resume_from_checkpoint
    if resume not in (None, False, "auto", True) and not Path(str(resume)).is_dir():
        raise UserError(f"--resume_from_checkpoint {resume} is not a folder")
    # The output rule (io.py): a writable folder that neither holds nor lies inside what the run reads.
    inputs = [("--base_model", f.name if Path(f.name).exists() else None), *(("--data", p) for p in resolve_data(f.data)),
              *(("--decontaminate", p) for p in as_list(f.decontaminate or ()))]
    checkpoints.check_output_dir(f.output_dir, inputs)
    f.inputs = inputs[1:]
    return f


def prepare(f: SimpleNamespace) -> SimpleNamespace:
    """The data read, checked and tokenised; the run recorded and its output folder planned."""
    prompter = Prompter(f.prompt_template_name)
    files, columns = load_mixture(f.data, seed=f.seed, skip_bad_records=f.skip_bad_records, log=log,
                                  dedup_mode=f.dedup, max_records_per_source=f.max_records_per_source,
                                  decontaminate=f.decontaminate)
    tokenizer = models.load_tokenizer(f.name)
    tokenizer.padding_side = "right"
    prompter.bind(tokenizer)  # a chat template is the tokenizer's own, and part of what the run is
    if prompter.chat:
        f.chat_template_sha256 = hashlib.sha256(tokenizer.chat_template.encode("utf-8")).hexdigest()
    overhead = prompt_overhead(tokenizer, prompter)
    if f.cutoff_len <= overhead:
        raise UserError(f"--cutoff_len {f.cutoff_len} is smaller than the prompt template alone ({overhead} tokens)")
    n_records = len(columns["output"])
    if f.val_set_size >= n_records:
        raise UserError(f"--val_set_size {f.val_set_size} leaves no training data ({n_records} records); lower it")
    f.target_modules = methods.method(f.method).target_modules(f)
    config = checkpoints.run_config(f, files, n_records)
    log("alpaca-cot finetune\n" + json.dumps(config, indent=2, ensure_ascii=False))
    record = checkpoints.run_record(config, files)
    plan = checkpoints.plan(f.output_dir, record, f.name, f.resume_from_checkpoint, f.overwrite, warn=log,
                            inputs=f.inputs)
    if f.packing and f.attn_implementation in ("sdpa", "eager") and torch.cuda.is_available():
        log("note: with --packing, sdpa and eager attend over the whole packed row through a mask; on an H200 "
            "that trained slower than padding (benchmarks/README.md); flash_attention_2 attends per record")
    train_data, val_data = tokenise(columns, tokenizer, prompter, f.cutoff_len, f.train_on_inputs, f.val_set_size,
                                    f.seed, f.train_on_history, log=log)
    return SimpleNamespace(flags=f, output_dir=f.output_dir, tokenizer=tokenizer, record=record, plan=plan,
                           train_data=train_data, val_data=val_data)


def build(run: SimpleNamespace):
    """The LoRA model (models.py) and the Trainer over it (trainer.py)."""
    from transformers import set_seed

    f = run.flags
    args = training_args(f, evaluate=run.val_data is not None)  # first: FSDP's loading rules come with it
    set_seed(f.seed)  # before the adapter's random initialisation, so that --seed reproduces a run
    model = methods.method(f.method).build(f, run.tokenizer)  # LoRA, or every weight (model/methods.py)
    if models.is_main_process():  # the trained size is known once the model is built: room for it and its checkpoints
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        size = checkpoints.expected_bytes(f, len(run.train_data), trainable)
        outputs.check_space([outputs.Output(run.output_dir, "--output_dir", "folder", size)])
    if f.compile_layers:
        kernels.compile_layers(model)
    if f.offload_activations:
        offload.offload_activations(model, f.gradient_checkpointing)
    return build_trainer(run, model, args)  # (the Trainer creates the output folder)
