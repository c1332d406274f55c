"""LoRA fine-tuning under the Hugging Face Trainer: the body of finetune.py.

finetune() reads as its steps: resolve (every flag checked, defaults decided) -> prepare (data.py: the
records read, checked and drawn; preprocess.py: tokenised once with the prompt masked out of the loss; the
output folder planned) -> build (models.py: the LoRA model; trainer.py: the collator, the Trainer) -> train
-> save (adapters.py: the adapter as a unit; train_summary.json). Nothing loads a model before prepare is done.
Runs as one process or under torchrun / torch.distributed.launch (one process per GPU).
"""

import hashlib
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from alpaca_cot.model import adapters, kernels, models, offload, sharding

from alpaca_cot.train import checkpoints, distributed, recipes

from alpaca_cot import io, outputs
from alpaca_cot.model.checks import check_attention, check_finetune_flags, check_quantization
from alpaca_cot.data.catalog import resolve as resolve_data
from alpaca_cot.cli import UserError, as_list
from alpaca_cot.data.loader import load_mixture
from alpaca_cot.model.kernels import use_fused_kernels
from alpaca_cot.data.preprocess import Prompter, prompt_overhead, tokenise
from alpaca_cot.train.trainer import build_trainer, training_args


def log(*args):
    if models.is_main_process():
        print(*args, flush=True)


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
    compile_layers: bool = False,
    offload_activations: bool = False,
    packing: bool = False, pad_to_cutoff: bool = None,  # they exclude each other
    upcast_norms: bool = None,
    attn_implementation: str = "sdpa",
    fsdp: bool = False,
    device_map: str = None,
    method: str = "lora",
    # lora
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_target_modules=None,
    use_dora: bool = False,
    use_rslora: bool = False,
    init_lora_weights: str = "default",
    # data and prompt
    prompt_template_name: str = "alpaca",
    train_on_inputs: bool = None,
    train_on_history: bool = True,
    max_records_per_source: int = None,
    dedup: str = "none",
    decontaminate: str = None,
    group_by_length: bool = None,
    balance_ranks: bool = True,
    overlap_steps: bool = True,
    profile_steps: int = 0,
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
        compile_layers: torch.compile each decoder layer (regional, dynamic shapes: no recompile per padded
            length); off by default until measured on a GPU (benchmarks/README.md).
        offload_activations: with --gradient_checkpointing, keep the checkpointed layer inputs in pinned CPU
            memory between forward and backward, copied on side streams (less GPU memory; on the CPU, copies).
        packing: put each micro-batch's records in one row without padding.
        pad_to_cutoff: pad every record to --cutoff_len, as the 2023 recipe did (off: each batch to its longest).
        upcast_norms: peft's prepare_model_for_kbit_training: fp32 norms, embeddings and head around a quantized
            base, as the 2023 recipe did (off by default: far more memory at the same speed).
        attn_implementation: sdpa, eager, flex_attention or flash_attention_2.
        fsdp: shard the base model over the processes of a torchrun/accelerate launch (FSDP2), bf16 or 4bit.
        device_map: auto: split one process's model over the visible GPUs (naive model parallel; no launcher).
        method: lora (an adapter on the frozen base), or full: every weight trained (--quantization none; bf16 on
            a GPU), the output folder then holding the whole tuned model, which generate.py loads as its base.
        lora_r: rank of the LoRA matrices.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        lora_dropout: dropout on the LoRA input, in [0, 1).
        lora_target_modules: modules that get an adapter, comma-separated, or all-linear; peft's defaults for
            the model's architecture when unset (q_proj,v_proj for LLaMA, query_key_value for BLOOM).
        use_dora: DoRA (peft): the update split into a magnitude and a LoRA direction; 16-bit or 4-bit bases.
        use_rslora: rank-stabilised LoRA (peft): the update scaled by alpha / sqrt(r) instead of alpha / r.
        init_lora_weights: default (A random, B zero: the update starts at 0), gaussian, olora, or pissa / pissa_niter_N
            (the principal singular vectors of each weight; --quantization none). A PiSSA or OLoRA adapter is
            saved converted, so that it applies to the unchanged base like any other adapter.
        prompt_template_name: a template in templates/: alpaca, alpaca_legacy, or chat (the tokenizer's own chat
            template, its turns and end-of-turn token).
        train_on_inputs: also train on the prompt, not only on the response (on with --recipe 2023).
        train_on_history: in multi-turn records, learn every assistant turn; False: only the last one.
        max_records_per_source: draw at most this many records from each --data source (with --seed).
        dedup: remove repeated prompts within and across sources: none (as given), exact or near (MinHash).
        decontaminate: evaluation files (.json/.jsonl, comma-separated) whose rows are removed from the data.
        group_by_length: batch records of similar length together (on; off with --recipe 2023).
        balance_ranks: with group_by_length on several GPUs, give every GPU an equal share of each step's padded
            tokens (False: transformers' order, whose longest micro-batch of each step goes to the first GPU).
        overlap_steps: on a GPU, copy micro-batches to it without waiting and drop the Trainer's per-step NaN
            check of the logged loss, so that the CPU prepares the next step while the GPU computes (False: the
            Trainer's synchronous loop, for comparison).
        profile_steps: record the run's last N optimizer steps with torch.profiler: a Chrome trace and a summary
            per rank in output_dir/profile (GPU busy share, stalls, NCCL, host waits); the speed stops before them.
        skip_bad_records: skip and count malformed records instead of stopping.
        resume_from_checkpoint: auto (the last checkpoint in output_dir) or a checkpoint folder.
        overwrite: replace an adapter already saved in output_dir.
        report_to: none, auto (tensorboard if installed), or an installed tracker such as wandb.
        local_rank: set by torch.distributed.launch; the LOCAL_RANK variable is what counts.
    """
    flags = recipes.apply(recipe, "finetune", locals())
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
            if run.flags.method == "full":
                adapters.save_model(trainer.model, run.tokenizer, run.output_dir)
            else:
                adapters.save_adapter(trainer.model, run.tokenizer, run.output_dir, state_dict=adapter,
                                      convert_from=initial)
            if initial is not None:
                shutil.rmtree(initial, ignore_errors=True)
            checkpoints.write_summary(run.output_dir, result.metrics, trainer.state.log_history, speed.metrics(),
                                      log=log, seconds=round(time.time() - started, 1),
                                      output_dir=str(run.output_dir), quantization=run.flags.quantization)
    distributed.end()
    return trainer



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
    f.target_modules = None if f.method == "full" else \
        models.target_modules(f.name, as_list(f.lora_target_modules) if f.lora_target_modules else None)
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
    if f.method == "full":
        model = models.full_model(f.name, run.tokenizer, f.gradient_checkpointing, f.fused_kernels, f.attn_implementation)
    else:
        model = models.lora_model(f.name, f.quantization, run.tokenizer, f.gradient_checkpointing, f.lora_r,
                                  f.lora_alpha, f.lora_dropout, f.target_modules, f.fused_kernels, f.attn_implementation,
                                  f.upcast_norms, device_map=f.device_map, sharded=f.fsdp,
                                  variant=models.lora_variant(f.use_dora, f.use_rslora, f.init_lora_weights))
    if models.is_main_process():  # the trained size is known once the model is built: room for it and its checkpoints
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        size = checkpoints.expected_bytes(f, len(run.train_data), trainable)
        outputs.check_space([outputs.Output(run.output_dir, "--output_dir", "folder", size)])
    if f.compile_layers:
        kernels.compile_layers(model)
    if f.offload_activations:
        offload.offload_activations(model, f.gradient_checkpointing)
    return build_trainer(run, model, args)  # (the Trainer creates the output folder)
