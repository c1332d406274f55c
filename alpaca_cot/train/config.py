"""finetune's configuration: every flag of finetune.py as one typed field, with its default, its help, the
range its value must be in, and whether it defines the run (alpaca_cot/config.py says how).

A field left at None is decided later: by the recipe (train/recipes.py: `default` or `2023`), or, for
micro_batch_size, gradient_checkpointing and fused_kernels, by what the run can use (train/finetune.py's
resolve). Torch-free: the command line is checked against it before anything heavy is imported.
"""

from dataclasses import dataclass

from alpaca_cot.config import (AT_LEAST_ONE, COUNT, FRACTION, POSITIVE, POSITIVE_INT, UNLESS_DEFAULT, Rule, integer,
                               flag)

MAX_STEPS = Rule(lambda v: integer(v) and (v == -1 or v >= 1), "-1 (train --num_epochs) or an integer >= 1")
SAVE_LIMIT = Rule(lambda v: v is None or integer(v) and v >= 1, "an integer >= 1 or None")


@dataclass
class FinetuneConfig:
    """Fine-tune a LLaMA-family model with LoRA on instruction data and save the adapter.

    Flags left unset take the recipe's values: the default recipe is this project's corrected, fast one;
    --recipe 2023 is the original Alpaca-CoT finetune.py's (micro-batch 4, gradient checkpointing with fp32
    norms, every record padded to cutoff_len, loss on prompt and response, no length grouping).
    """
    # the model, the data, the output
    base_model: str = flag(None,
        'local folder, hub id (org/name or gpt2), .gguf file or preset of the base model; wins over --size.',
        defines_run=True)
    size: int = flag(7, 'LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.')
    data: str = flag('cot', 'dataset names joined by - (alpaca-belle-cot), or .json/.jsonl files, comma-separated.')
    output_dir: str = flag(None,
        'where the adapter is saved; saved-{data}{size}b, or saved-{data}-{base name} with --base_model.')
    recipe: str = flag(None, 'default, or 2023 (the original Alpaca-CoT training recipe); explicit flags win.')
    quantization: str = flag('8bit',
        '8bit (the original recipe), 4bit (QLoRA) or none (bf16, fp32 on a CPU).', defines_run=True)
    # training
    batch_size: int = flag(128, 'records per optimizer step, over all processes.', defines_run=True)
    micro_batch_size: int = flag(None,
        'records per forward pass on each GPU; 32 for bf16 with fused kernels, else 16.', defines_run=True)
    num_epochs: float = flag(3, 'passes over the training data (ignored when --max_steps > 0).')
    learning_rate: float = flag(0.0003, 'peak learning rate of the linear schedule.', POSITIVE, defines_run=True)
    cutoff_len: int = flag(512,
        'longest record in tokens; longer ones are cut, and then end without EOS.', defines_run=True)
    val_set_size: int = flag(2000, 'records held out for evaluation (0: none).', COUNT, defines_run=True)
    warmup_steps: int = flag(100, 'optimizer steps of linear warm-up.', COUNT, defines_run=True)
    eval_steps: int = flag(200, 'evaluate every this many optimizer steps.', AT_LEAST_ONE)
    save_steps: int = flag(200, 'save a checkpoint every this many optimizer steps.', AT_LEAST_ONE)
    save_total_limit: int = flag(3, 'checkpoints kept in output_dir (None: all).', SAVE_LIMIT)
    max_steps: int = flag(-1, 'stop after this many optimizer steps (-1: run --num_epochs).', MAX_STEPS)
    logging_steps: int = flag(10, 'log the loss every this many optimizer steps.', AT_LEAST_ONE)
    seed: int = flag(42,
        "seeds the data split, the shuffling and the adapter's initialisation.", COUNT, defines_run=True)
    gradient_checkpointing: bool = flag(None,
        'recompute activations to save memory; on for 4bit only by default.')
    fused_kernels: bool = flag(None, "Liger's fused Triton kernels; on by default on a GPU with liger-kernel.")
    compile_layers: bool = flag(False,
        'torch.compile each decoder layer (regional, dynamic shapes: no recompile per padded length); off by '
        'default until measured on a GPU (benchmarks/README.md).')
    offload_activations: bool = flag(False,
        'with --gradient_checkpointing, keep the checkpointed layer inputs in pinned CPU memory between '
        'forward and backward, copied on side streams (less GPU memory; on the CPU, copies).')
    packing: bool = flag(False, "put each micro-batch's records in one row without padding.", defines_run=True)
    pad_to_cutoff: bool = flag(None,
        'pad every record to --cutoff_len, as the 2023 recipe did (off: each batch to its longest).', defines_run=True)
    upcast_norms: bool = flag(None,
        "peft's prepare_model_for_kbit_training: fp32 norms, embeddings and head around a quantized base, as "
        'the 2023 recipe did (off by default: far more memory at the same speed).', defines_run=True)
    attn_implementation: str = flag('sdpa', 'sdpa, eager, flex_attention or flash_attention_2.')
    fsdp: bool = flag(False,
        'shard the base model over the processes of a torchrun/accelerate launch (FSDP2), bf16 or 4bit.',
        defines_run=UNLESS_DEFAULT)
    device_map: str = flag(None,
        "auto: split one process's model over the visible GPUs (naive model parallel; no launcher).")
    method: str = flag('lora',
        'lora (an adapter on the frozen base), or full: every weight trained (--quantization none; bf16 on a '
        'GPU), the output folder then holding the whole tuned model, which generate.py loads as its base.',
        defines_run=UNLESS_DEFAULT)
    # the tuning method
    lora_r: int = flag(8, 'rank of the LoRA matrices.', POSITIVE_INT, defines_run=True)
    lora_alpha: int = flag(16,
        'LoRA scaling numerator (the update is scaled by alpha / r).', POSITIVE, defines_run=True)
    lora_dropout: float = flag(0.05, 'dropout on the LoRA input, in [0, 1).', FRACTION, defines_run=True)
    lora_target_modules: str | tuple = flag(None,
        "modules that get an adapter, comma-separated, or all-linear; peft's defaults for the model's "
        'architecture when unset (q_proj,v_proj for LLaMA, query_key_value for BLOOM).', defines_run=True)
    use_dora: bool = flag(False,
        'DoRA (peft): the update split into a magnitude and a LoRA direction; 16-bit or 4-bit bases.',
        defines_run=UNLESS_DEFAULT)
    use_rslora: bool = flag(False,
        'rank-stabilised LoRA (peft): the update scaled by alpha / sqrt(r) instead of alpha / r.',
        defines_run=UNLESS_DEFAULT)
    init_lora_weights: str = flag('default',
        'default (A random, B zero: the update starts at 0), gaussian, olora, or pissa / pissa_niter_N (the '
        'principal singular vectors of each weight; --quantization none). A PiSSA or OLoRA adapter is saved '
        'converted, so that it applies to the unchanged base like any other adapter.', defines_run=UNLESS_DEFAULT)
    # data and prompt
    prompt_template_name: str = flag('alpaca',
        "a template in templates/: alpaca, alpaca_legacy, or chat (the tokenizer's own chat template, its "
        'turns and end-of-turn token).', defines_run=True, record_as="prompt_template")
    train_on_inputs: bool = flag(None,
        'also train on the prompt, not only on the response (on with --recipe 2023).', defines_run=True)
    train_on_history: bool = flag(True,
        'in multi-turn records, learn every assistant turn; False: only the last one.', defines_run=True)
    max_records_per_source: int = flag(None,
        'draw at most this many records from each --data source (with --seed).', defines_run=True)
    dedup: str = flag('none',
        'remove repeated prompts within and across sources: none (as given), exact or near (MinHash).',
        defines_run=True)
    decontaminate: str = flag(None,
        'evaluation files (.json/.jsonl, comma-separated) whose rows are removed from the data.', defines_run=True)
    group_by_length: bool = flag(None,
        'batch records of similar length together (on; off with --recipe 2023).', defines_run=True)
    balance_ranks: bool = flag(True,
        "with group_by_length on several GPUs, give every GPU an equal share of each step's padded tokens "
        "(False: transformers' order, whose longest micro-batch of each step goes to the first GPU).",
        defines_run=UNLESS_DEFAULT)
    overlap_steps: bool = flag(True,
        "on a GPU, copy micro-batches to it without waiting and drop the Trainer's per-step NaN check of the "
        "logged loss, so that the CPU prepares the next step while the GPU computes (False: the Trainer's "
        'synchronous loop, for comparison).')
    profile_steps: int = flag(0,
        "record the run's last N optimizer steps with torch.profiler: a Chrome trace and a summary per rank "
        'in output_dir/profile (GPU busy share, stalls, NCCL, host waits); the speed stops before them.', COUNT)
    skip_bad_records: bool = flag(False, 'skip and count malformed records instead of stopping.', defines_run=True)
    # the run
    resume_from_checkpoint: str = flag(None, 'auto (the last checkpoint in output_dir) or a checkpoint folder.')
    overwrite: bool = flag(False, 'replace an adapter already saved in output_dir.')
    report_to: str = flag('auto', 'none, auto (tensorboard if installed), or an installed tracker such as wandb.')
    local_rank: int = flag(None, 'set by torch.distributed.launch; the LOCAL_RANK variable is what counts.')
