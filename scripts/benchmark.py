"""GPU benchmark of the project's recipes against the 2023 one, side by side in one run.

    python scripts/benchmark.py [--shape 7b] [--recipes legacy,8bit,4bit,none] [--out benchmarks/h100.json]

Builds a random-init LLaMA of the chosen shape (no weights are downloadable), takes sample
lengths from real data through the project's own pipeline (formatted FLAN CoT and the alpaca
sample from ../shared), and runs each recipe in its own process:
  legacy   the 2023 recipe reproduced: int8, gradient checkpointing, fp16, padded to 512, micro-batch 4
  8bit, 4bit, none   finetune.py as users run it; `4bit:8` adds --micro_batch_size 8, `ckpt` /
                     `nockpt` set --gradient_checkpointing; `none:fused` / `none:unfused` set --fused_kernels;
                     `none:packed` adds --packing, `none:packed:flex` also flex attention
`--memory_cap_gib 78` caps each training process's GPU memory (what an 80 GB H100 leaves after
the CUDA context), to check on a larger card that a recipe fits the smaller one.
Then generation (ms/token at batch 1, tokens/s at batch 32, 128 new tokens).
`--gpus 1,2,4` instead runs each recipe on the first 1, 2 and 4 GPUs (torchrun) at the same global
batch and reports real tokens/s per GPU against 1 GPU; `none:unbalanced` is `none` with finetune's
--balance_ranks False (transformers' order dealt round-robin to the ranks), to compare the two orders;
`none:nooverlap` is `none` with --overlap_steps False (the Trainer's synchronous loop).
`--peers unsloth` instead runs each of --peer_configs (e.g. bf16:qv:16, 4bit:all:16:ckpt) three ways on exactly
the same micro-batches, each in its own process: this project's model path in a plain loop (`ours`),
finetune.py itself (its Trainer), and unsloth's FastLanguageModel in the same plain loop; it reports real
tokens/s, peak memory, the first micro-batch's loss and the ratios to unsloth (alpaca_cot/bench/peers.py).
`python scripts/benchmark.py data_path --data D --model M` measures the CPU data path alone.
Prints a table and writes the figures, card, versions and date as JSON.
"""

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from alpaca_cot import ROOT, io, outputs

from alpaca_cot.data import cot
from alpaca_cot.cli import UserError, as_list, lazy_import, run
from alpaca_cot.bench.peers import run_system  # noqa: F401  (a subcommand: one system of --peers)

# Imported on first use: the flags are checked before torch's seconds of importing.
torch = lazy_import("torch")
throughput = lazy_import("alpaca_cot.train.throughput")

LORA_FLOPS_PER_TOKEN_PER_PARAM = 4  # forward 2N + input gradients 2N; frozen weights get no gradient


def matmul_peak_tflops(n=8192, iters=10) -> float:
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12


def make_data(shared: Path, out: Path) -> Path:
    """All formatted FLAN CoT rows in ../shared (clean style) plus the alpaca sample."""
    templates, rng, records = cot.load_templates(), random.Random(0), []
    for tsv in sorted((shared / "data" / "flan_cot").glob("*_train.tsv")):
        name = tsv.name.removesuffix("_train.tsv")
        records += cot.format_dataset(name, cot.read_tsv(tsv, "clean"), templates, rng)
    alpaca = json.loads((shared / "data" / "alpaca_cleaned.sample.json").read_text(encoding="utf-8"))
    records += [r for r in alpaca if r["output"].strip()]
    out.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return out


def finetune_command(recipe: str, model: Path, data: Path, run_dir: Path, max_steps: int,
                     batch_size: int = None) -> list[str]:
    """finetune.py's command line for a recipe such as none, 4bit:8:nockpt or none:unbalanced.

    batch_size: records per optimizer step over all GPUs; one micro-batch by default.
    """
    from alpaca_cot.model import kernels
    from alpaca_cot.train.recipes import default_micro_batch_size

    quantization, *options = recipe.split(":")  # e.g. 4bit:8:nockpt = micro-batch 8, no checkpointing
    args = [sys.executable, "finetune.py", "--base_model", str(model), "--data", str(data),
            "--quantization", quantization, "--max_steps", str(max_steps), "--val_set_size", "0",
            "--output_dir", str(run_dir), "--overwrite", "--report_to", "none", "--save_steps", "100000",
            "--logging_steps", "20"]
    chosen = "fused" in options or "unfused" in options
    fused = "fused" in options if chosen else kernels.use_fused_kernels(None)
    micro = next((int(o) for o in options if o.isdigit()), default_micro_batch_size(quantization, fused))
    args += ["--micro_batch_size", str(micro), "--batch_size", str(batch_size or micro)]
    if "ckpt" in options or "nockpt" in options:
        args += ["--gradient_checkpointing", str("ckpt" in options)]
    if chosen:
        args += ["--fused_kernels", str(fused)]
    if "packed" in options:
        args += ["--packing"]
    if "flex" in options:
        args += ["--attn_implementation", "flex_attention"]
    if "unbalanced" in options:
        args += ["--balance_ranks", "False"]
    if "nooverlap" in options:
        args += ["--overlap_steps", "False"]
    return args


def sh(args: list[str], log: Path, env: dict = None) -> int:
    print("$", " ".join(args), flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, **env} if env else None)
    if proc.returncode:
        print(f"  failed ({proc.returncode}); last lines of {log}:\n" + "".join(open(log).readlines()[-15:]))
    return proc.returncode


def legacy_2023(model: str, data: str, steps: int = 12, out: str = "legacy.json"):
    """The 2023 Alpaca-CoT recipe, reproduced for comparison (not a finetune.py option).

    Args:
        model: the model folder.
        data: the data file.
        steps: optimizer steps of one micro-batch of 4.
        out: the JSON file the speed is written to.
    """
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, DataCollatorForLanguageModeling, Trainer

    from alpaca_cot.data import loader as registry

    from alpaca_cot.model import models
    from alpaca_cot.data.preprocess import Prompter, encode_batch
    from alpaca_cot.train.throughput import CountingCollator, throughput_callback
    from alpaca_cot.train.trainer import _training_args

    tokenizer = models.load_tokenizer(model)
    dataset = Dataset.from_dict(registry.load(data)).shuffle(seed=0).select(range(steps * 4 + 64))
    dataset = dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names,
                          fn_kwargs=dict(tokenizer=tokenizer, prompter=Prompter("alpaca"), cutoff_len=512))

    def pad_512(b):  # what 2023's tokenize(padding="max_length") produced
        ids = [x + [tokenizer.pad_token_id] * (512 - len(x)) for x in b["input_ids"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) + [0] * (512 - len(x)) for x in b["input_ids"]]}

    dataset = dataset.map(pad_512, batched=True, remove_columns=dataset.column_names)
    lm = AutoModelForCausalLM.from_pretrained(model, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                              dtype=torch.float16, device_map={"": 0})
    lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=True)
    lm = get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                       task_type="CAUSAL_LM"))
    collator = CountingCollator(tokenizer, collate=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    speed = throughput_callback(collator, warmup_steps=2)
    args = _training_args(output_dir="/tmp/legacy-2023", per_device_train_batch_size=4, max_steps=steps,
                          learning_rate=3e-4, fp16=True, logging_steps=10, save_strategy="no", report_to="none",
                          group_by_length=False, remove_unused_columns=False)
    Trainer(model=lm, args=args, train_dataset=dataset, data_collator=collator, callbacks=[speed]).train()
    Path(out).write_text(json.dumps(speed.metrics()))


def capped(cap_gib: float, script: str, *args):
    """Run a script with PyTorch's allocator capped at cap_gib of GPU memory (an OOM past it)."""
    import runpy

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total))
    sys.argv = [script, *map(str, args)]
    runpy.run_path(script, run_name="__main__")


def names(value) -> list[str]:
    return as_list(value)


# name -> Generator options. generate.py merges by default in 16-bit and compiles for long
# --input_file runs (see its worth_compiling).
GEN_VARIANTS = {"unmerged": dict(merge=False), "merged": dict(merge=True), "compiled": dict(merge=True, compile=True),
                "default": {}}


def generation(model: str, adapter: str, quantization: str = "none", out: str = "gen.json", new_tokens: int = 128,
               variants: str = "default"):
    """ms/token at batch 1 and tokens/s at batch 32, greedy, exactly new_tokens tokens each.

    Args:
        model: the base model folder.
        adapter: the adapter folder.
        quantization: none, 8bit or 4bit.
        out: the JSON file the figures are written to.
        new_tokens: tokens generated per prompt.
        variants: comma-separated GEN_VARIANTS names.
    """
    from alpaca_cot.infer.generation import Generator

    results = {}
    for variant in names(variants):
        gen = Generator(model, adapter, quantization, **GEN_VARIANTS[variant])
        prompts = [gen.prompt(f"Explain step by step why {n} is or is not a prime number.") for n in range(100, 132)]
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      temperature=None, top_p=None, top_k=None)
        row = {"compiled": gen.compile}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        for batch in (1, 32):
            for _ in range(2):  # warm-up; with a static cache the first run of a shape compiles
                gen.generate(prompts[:batch], **kwargs)
            throughput.gpu_sync()
            t = time.perf_counter()
            gen.generate(prompts[:batch], **kwargs)
            throughput.gpu_sync()
            seconds = time.perf_counter() - t
            row[f"batch{batch}"] = {"ms_per_token": round(1000 * seconds / new_tokens, 2),
                                    "tokens_per_s": round(batch * new_tokens / seconds, 1)}
        if torch.cuda.is_available():
            row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        results[variant] = row
        print(variant, row, flush=True)
        del gen
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    Path(out).write_text(json.dumps(results))


def data_path(data: str, model: str, records: int = 600_000, legacy_records: int = 20_000):
    """CPU records/s for format + tokenise + mask: the project's batched single pass against the 2023
    way (one record at a time, tokenising the prompt and the full text, padding to 512).

    Args:
        data: a --data value.
        model: the model folder or hub id whose tokenizer is used.
        records: records formatted and tokenised the project's way.
        legacy_records: records formatted and tokenised the 2023 way.
    """
    from datasets import Dataset

    from alpaca_cot.data import loader as registry

    from alpaca_cot.model import models
    from alpaca_cot.data.preprocess import Prompter, encode_batch

    tokenizer, prompter = models.load_tokenizer(model), Prompter("alpaca")
    columns = registry.load(data, skip_bad_records=True)
    reps = -(-records // len(columns["output"]))
    big = Dataset.from_dict({k: (v * reps)[:records] for k, v in columns.items()})
    t = time.perf_counter()
    big.map(encode_batch, batched=True, batch_size=1000, remove_columns=big.column_names,
            fn_kwargs=dict(tokenizer=tokenizer, prompter=prompter, cutoff_len=512))
    ours = records / (time.perf_counter() - t)

    def legacy(r):
        prompt = prompter.prompt(r["instruction"], r["input"])
        full = tokenizer(prompt + r["output"], truncation=True, max_length=513, padding="max_length")
        n_prompt = len(tokenizer(prompt, truncation=True, max_length=513)["input_ids"])
        ids = full["input_ids"][:-1]
        return {"input_ids": ids, "attention_mask": full["attention_mask"][:-1],
                "labels": [-100] * n_prompt + ids[n_prompt:]}

    small = big.select(range(legacy_records))
    t = time.perf_counter()
    small.map(legacy, remove_columns=small.column_names)
    theirs = legacy_records / (time.perf_counter() - t)
    result = {"records": records, "records_per_s": round(ours), "legacy_records_per_s": round(theirs),
              "x_legacy": round(ours / theirs, 1)}
    print(json.dumps(result))
    return result


def setup(shape: str, shared: Path, work: Path, memory_cap_gib: float):
    """The report's header (card, versions, date, matmul peak), the random-init model, the data, FLOPs per token."""
    from alpaca_cot.model import tiny

    work.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers
    try:
        import bitsandbytes
        bnb_version = bitsandbytes.__version__
    except ImportError:
        bnb_version = None
    report = {"card": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"), "shape": shape,
              "memory_cap_gib": memory_cap_gib,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "bitsandbytes": bnb_version},
              "matmul_peak_tflops": round(matmul_peak_tflops(), 1), "train": {}, "generation": {}}
    print(json.dumps(report, indent=1), flush=True)
    model = work / f"llama-{shape}"
    if not (model / "config.json").exists():
        t = time.time()
        tokenizer_model = shared / "tokenizers" / "llama" / "tokenizer.model"
        tiny.build(model, tokenizer_model=tokenizer_model if tokenizer_model.exists() else None, shape=shape)
        print(f"built a random-init {shape} model in {time.time() - t:.0f} s", flush=True)
    # Each recipe runs in its own process: hand this one's cached GPU memory (the matmul test, the
    # model built on the GPU) back first, or it stays unavailable to them.
    torch.cuda.empty_cache()
    data = make_data(shared, work / "bench_data.json")
    config = json.loads((model / "config.json").read_text())
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    # Matmul parameters: attention and MLP weights of every layer, plus the LM head (embedding lookups cost none).
    n_params = layers * (4 * h * h + 3 * h * config["intermediate_size"]) + vocab * h
    return report, model, data, LORA_FLOPS_PER_TOKEN_PER_PARAM * n_params


def main(shape: str = "7b", recipes: str = "legacy,8bit,4bit,4bit:nockpt,none", steps: int = 60,
         shared: str = None, work_dir: str = "/tmp/alpaca-cot-bench", out: str = None, generation_runs: str = "none,8bit",
         gen_variants: str = "unmerged,merged,compiled", memory_cap_gib: float = None, gpus: str = None,
         global_batch: int = 128, scaling_steps: int = 40, profile_steps: int = 0, overwrite: bool = False,
         peers: str = None, peer_configs: str = "bf16:qv:16,bf16:qv:32,bf16:all:16,bf16:qv:16:ckpt,4bit:qv:16:ckpt,"
         "4bit:all:16:ckpt", peers_site: str = "/tmp/peers-site", peer_systems: str = "ours,finetune,unsloth"):
    """Train each recipe on a random-init model of --shape, then time generation; print and save the figures.

    Args:
        shape: the LLaMA-1 shape of the random-init model: 7b or 13b.
        recipes: comma-separated: legacy, 8bit, 4bit, none, with options such as 4bit:8 or none:fused;
            with --gpus, `none:unbalanced` trains with --balance_ranks False; `none:nooverlap` (any run) with
            --overlap_steps False.
        steps: optimizer steps of one micro-batch each per recipe.
        shared: the folder with the real data and the LLaMA tokenizer; ../shared by default.
        work_dir: where the model, data, runs and logs go.
        out: the JSON file the report is written to (none by default).
        generation_runs: quantizations whose generation speed is timed, comma-separated.
        gen_variants: generate.py variants timed in 16-bit: unmerged, merged, compiled, default.
        memory_cap_gib: cap each training process's GPU memory at this many GiB.
        gpus: GPU counts, comma-separated (1,2,4): instead of the recipe table and generation, train each
            recipe on the first N GPUs (torchrun) at --global_batch and report the speed per GPU against 1 GPU.
        global_batch: records per optimizer step over all GPUs, the same for every GPU count (with --gpus).
        scaling_steps: timed optimizer steps of the 1-GPU run with --gpus; on N GPUs N times as many, so that every
            GPU computes the same micro-batches at every count, after the same untimed warm-up per GPU.
        profile_steps: with --gpus, add this many steps to every run and profile them (finetune --profile_steps):
            each rank's summary (GPU busy share, stalls, NCCL and host-wait time) goes in the report.
        overwrite: replace an existing --out report (a JSON file only).
        peers: unsloth: compare with it on the same micro-batches instead of the recipe table (--steps of them each).
        peer_configs: the rows compared with --peers, comma-separated quantization:modules:micro_batch[:ckpt][:compile][:offload].
        peers_site: a folder put first on PYTHONPATH of the peer's process alone (gpu-payload.sh --peers puts
            unsloth's pinned datasets there).
        peer_systems: which of ours (the plain loop), finetune (finetune.py) and unsloth run with --peers.
    """
    if not torch.cuda.is_available():
        raise UserError("the benchmark needs a CUDA GPU")
    if out:  # the output rule (alpaca_cot/outputs.py), before the hours of work
        outputs.check_outputs([outputs.Output(out, "--out", "json", 1 << 20)], (), overwrite)
    if peers is not None:
        from alpaca_cot.bench import peers as peer_lib

        if peers != "unsloth":
            raise UserError(f"--peers {peers!r}: the peer measured is unsloth")
        configs = [(spec, peer_lib.parse_config(spec)) for spec in names(peer_configs)]
        systems = peer_lib.parse_systems(names(peer_systems))
        report, model, data, _ = setup(shape, Path(shared or ROOT.parent / "shared"), Path(work_dir), memory_cap_gib)
        return compare_peers(report, configs, model, data, Path(work_dir), steps, peers_site, out, systems)
    counts = gpu_counts(gpus, torch.cuda.device_count()) if gpus else None
    if counts and "legacy" in names(recipes):
        raise UserError("--gpus runs finetune.py recipes; drop legacy from --recipes")
    if counts:
        check_scaling(names(recipes), counts, global_batch, scaling_steps)
    report, model, data, flops_per_token = setup(shape, Path(shared or ROOT.parent / "shared"), Path(work_dir),
                                                 memory_cap_gib)
    if counts:
        return scaling(report, names(recipes), counts, model, data, Path(work_dir), global_batch, scaling_steps, out,
                       profile_steps)
    work = Path(work_dir)
    for recipe in names(recipes):
        result = work / f"{recipe.replace(':', '-')}.json"
        if recipe == "legacy":
            rc = sh([sys.executable, __file__, "legacy_2023", "--model", str(model), "--data", str(data),
                     "--out", str(result)], work / "legacy.log")
            metrics = json.loads(result.read_text()) if rc == 0 else None
        else:
            run_dir = work / f"run-{recipe.replace(':', '-')}"
            args = finetune_command(recipe, model, data, run_dir, steps)
            if memory_cap_gib:
                args = [sys.executable, __file__, "capped", str(memory_cap_gib), *args[1:]]
            rc = sh(args, work / f"{run_dir.name}.log")
            metrics = json.loads((run_dir / "train_summary.json").read_text()) if rc == 0 else None
        if metrics:
            metrics["mfu"] = round(metrics["real_tokens_per_s"] * flops_per_token / 1e12 / report["matmul_peak_tflops"], 4)
            metrics = {k: metrics[k] for k in ("real_tokens_per_s", "padded_tokens_per_s", "padding_share",
                                               "peak_gpu_gib", "mfu", "measured_steps") if k in metrics}
        report["train"][recipe] = metrics
        print(recipe, metrics, flush=True)
        save(report, out)  # after every recipe, so that a run cut short keeps what it measured
    base = (report["train"].get("legacy") or {}).get("real_tokens_per_s")
    for recipe, metrics in report["train"].items():
        if metrics and base:
            metrics["x_legacy"] = round(metrics["real_tokens_per_s"] / base, 2)
    adapter = work / "run-none"
    for quantization in names(generation_runs):
        result = work / f"gen-{quantization}.json"
        variants = ",".join(names(gen_variants)) if quantization == "none" else "default"
        rc = sh([sys.executable, __file__, "generation", "--model", str(model), "--adapter", str(adapter),
                 "--quantization", quantization, "--out", str(result), "--variants", variants],
                work / f"gen-{quantization}.log")
        report["generation"][quantization] = json.loads(result.read_text()) if rc == 0 else None
    print_table(report)
    save(report, out)
    if out:
        print(f"wrote {out}")



def gpu_counts(value, available: int) -> list[int]:
    """--gpus as a list of GPU counts, each between 1 and the GPUs present."""
    try:
        counts = [int(v) for v in names(value)]
    except ValueError:
        raise UserError(f"--gpus must be GPU counts, comma-separated (1,2,4), got {value!r}") from None
    bad = [n for n in counts if not 1 <= n <= available]
    if bad or not counts:
        raise UserError(f"--gpus {value}: each count must be between 1 and the {available} GPUs present")
    return counts


def micro_batch(recipe: str) -> int:
    args = finetune_command(recipe, Path("model"), Path("data"), Path("run"), 1)
    return int(args[args.index("--micro_batch_size") + 1])


def check_scaling(recipes: list[str], counts: list[int], global_batch: int, measured_steps: int):
    """Each run's global batch must split into whole micro-batches per GPU, and leave steps to time after the
    warm-up, or the run fails only after the model is built."""
    for recipe in recipes:
        micro = micro_batch(recipe)
        for n in counts:
            if global_batch % (micro * n):
                raise UserError(f"--global_batch {global_batch} is not a multiple of {recipe}'s micro-batch {micro} "
                                f"x {n} GPUs")
            run_steps(measured_steps, global_batch, micro, n)


def scaling_command(finetune: list[str], n_gpus: int, visible: str = None) -> tuple[list[str], dict]:
    """finetune.py's command on the first n_gpus visible GPUs: one process for 1, torchrun for more."""
    devices = names(visible) if visible else [str(i) for i in range(n_gpus)]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(devices[:n_gpus])}
    if n_gpus == 1:
        return finetune, env
    return [finetune[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_gpus),
            *finetune[1:]], env


def baseline(recipe: str) -> str:
    """The 1-GPU run a recipe is compared with: the same without :unbalanced (one process, same order)."""
    return ":".join(o for o in recipe.split(":") if o != "unbalanced")


def scaling_efficiency(runs: dict) -> dict:
    """runs[recipe][gpus] (train_summary.json fields) with per_gpu_efficiency: real tokens/s per GPU over
    that of the recipe's 1-GPU run."""
    for recipe, by_count in runs.items():
        base = (runs.get(baseline(recipe), {}).get("1") or {}).get("real_tokens_per_s")
        for count, m in by_count.items():
            if m and base:
                m["per_gpu_efficiency"] = round(m["real_tokens_per_s"] / (int(count) * base), 4)
    return runs


def step_overhead_ms(model: Path, iters: int = 50, device: str = "cuda") -> float:
    """GPU ms of one optimizer step's own work (clipping and AdamW) over q_proj/v_proj LoRA parameters of
    rank 8 of the model's shape: what every optimizer step pays, whatever the number of GPUs."""
    config = json.loads((model / "config.json").read_text())
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    params = [torch.nn.Parameter(torch.randn(*shape, device=device)) for _ in range(2 * layers)
              for shape in ((8, h), (h, 8))]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for i in range(iters + 5):
        if i == 5:
            throughput.gpu_sync()
            t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0).item()  # the Trainer reads the norm back for its log
        optimizer.step()
    throughput.gpu_sync()
    return round(1000 * (time.perf_counter() - t) / iters, 3)


def run_steps(measured_steps: int, global_batch: int, micro: int, gpus: int) -> int:
    """finetune's --max_steps on `gpus` GPUs such that every GPU computes the same micro-batches at every GPU
    count, untimed (the speed callback's warm-up) and timed (measured_steps optimizer steps of one GPU)."""
    accumulation = global_batch // (micro * gpus)
    measured = measured_steps * gpus
    max_steps = measured + math.ceil(throughput.WARMUP_MICRO_BATCHES / accumulation)
    if max_steps - throughput.untimed_steps(accumulation, max_steps) != measured:
        raise UserError(f"--scaling_steps {measured_steps} is too few to time after the warm-up on {gpus} GPUs")
    return max_steps


def scaling(report, recipes, counts, model, data, work, global_batch, measured_steps, out, profile_steps=0):
    """Each recipe on each GPU count at the same global batch; speed per GPU against 1 GPU."""
    report["scaling"] = {"global_batch": global_batch, "step_overhead_ms": step_overhead_ms(model), "runs": {}}
    runs = report["scaling"]["runs"]
    for recipe in recipes:
        runs[recipe] = {}
        for n in counts:
            if n == 1 and recipe != baseline(recipe):
                continue  # one process gets the same order either way
            run_dir = work / f"run-{recipe.replace(':', '-')}-{n}gpu"
            steps = run_steps(measured_steps, global_batch, micro_batch(recipe), n) + profile_steps
            args = finetune_command(recipe, model, data, run_dir, steps, global_batch)
            args += ["--profile_steps", str(profile_steps)] if profile_steps else []
            args, env = scaling_command(args, n, os.environ.get("CUDA_VISIBLE_DEVICES"))
            rc = sh(args, work / f"{run_dir.name}.log", env=env)
            summary = json.loads((run_dir / "train_summary.json").read_text()) if rc == 0 else {}
            runs[recipe][str(n)] = None if "real_tokens_per_s" not in summary else {k: summary[k] for k in (
                "real_tokens_per_s", "padded_tokens_per_s", "padding_share", "peak_gpu_gib", "measured_steps",
                "train_steps_per_second") if k in summary}
            if runs[recipe][str(n)] and profile_steps:
                runs[recipe][str(n)]["profile"] = {p.name.split("-")[0]: json.loads(p.read_text())
                                                   for p in sorted((run_dir / "profile").glob("rank*-summary.json"))}
            print(recipe, n, runs[recipe][str(n)], flush=True)
            save(report, out)
    scaling_efficiency(runs)
    print_scaling(report)
    save(report, out)
    if out:
        print(f"wrote {out}")


def print_scaling(report):
    s = report["scaling"]
    print(f"\n{report['card']}, {report['shape']} shape, global batch {s['global_batch']}; optimizer step "
          f"(clipping + AdamW on the LoRA parameters) {s['step_overhead_ms']} ms per step")
    print(f"{'recipe':18s} {'GPUs':>4s} {'real tok/s':>11s} {'per GPU':>8s} {'vs 1 GPU':>9s} {'pad %':>6s} "
          f"{'peak GiB':>9s} {'s/step':>7s}")
    for recipe, by_count in s["runs"].items():
        for count, m in by_count.items():
            if not m:
                print(f"{recipe:18s} {count:>4s} failed")
                continue
            steps_s = m.get("train_steps_per_second")
            print(f"{recipe:18s} {count:>4s} {m['real_tokens_per_s']:11.0f} {m['real_tokens_per_s'] / int(count):8.0f} "
                  f"{100 * m.get('per_gpu_efficiency', float('nan')):8.1f}% {100 * m['padding_share']:6.1f} "
                  f"{m.get('peak_gpu_gib', 0):9.1f} {1 / steps_s if steps_s else float('nan'):7.2f}")


def compare_peers(report, configs, model, data, work, steps, peers_site, out, systems):
    """Each config: the micro-batches saved once, then ours, finetune.py and unsloth, each in its own process."""
    from alpaca_cot.bench import peers as peer_lib

    rows, runs = {}, {}
    for spec, config in configs:
        batches = work / f"batches-mb{config['micro_batch_size']}.pt"
        if not batches.exists():
            peer_lib.micro_batches(str(model), str(data), config["micro_batch_size"], steps, batches)
        rows[spec] = {}
        for system in (s for s in peer_lib.SYSTEMS if s in systems):
            key = peer_lib.peer_key(spec) if system == "unsloth" else spec
            if (system, key) in runs:  # ours' options change nothing for unsloth: one run serves them all
                rows[spec][system] = runs[system, key]
                continue
            name = key.replace(":", "-")
            result = work / f"peer-{system}-{name}.json"
            env = {"PYTHONPATH": os.pathsep.join([peers_site, *filter(None, [os.environ.get("PYTHONPATH")])])} \
                if system == "unsloth" else None
            rc = sh([sys.executable, __file__, "run_system", "--system", system, "--model_dir", str(model),
                     "--batches", str(batches), "--config", key, "--out", str(result)], work / f"peer-{system}-{name}.log",
                    env)
            rows[spec][system] = runs[system, key] = json.loads(result.read_text()) if rc == 0 else None
        name = spec.replace(":", "-")
        if "finetune" not in systems:
            report["peers"] = peer_lib.ratios(rows)
            save(report, out)
            continue
        run_dir = work / f"peer-finetune-{name}"
        recipe = f"{config['quantization']}:{config['micro_batch_size']}:{'ckpt' if config['checkpointing'] else 'nockpt'}"
        args = finetune_command(recipe, model, data, run_dir, steps) + [
            "--lora_target_modules", ",".join(peer_lib.MODULES[config["modules"]]), "--lora_dropout", "0",
            "--compile_layers", str(config["compile"]), "--offload_activations", str(config["offload"])]
        rc = sh(args, work / f"{run_dir.name}.log")
        summary = json.loads((run_dir / "train_summary.json").read_text()) if rc == 0 else None
        rows[spec]["finetune"] = {k: summary[k] for k in ("real_tokens_per_s", "peak_gpu_gib")} if summary else None
        report["peers"] = peer_lib.ratios(rows)
        print(spec, json.dumps(report["peers"][spec]), flush=True)
        save(report, out)
    for spec, row in report["peers"].items():
        print(f"{spec:22s} " + "  ".join(f"{s} {(row.get(s) or {}).get('real_tokens_per_s', 'failed')}"
                                         for s in ("ours", "finetune", "unsloth"))
              + f"  ours x{row.get('speed_vs_unsloth', '-')} speed, x{row.get('memory_vs_unsloth', '-')} memory"
              + f"  finetune x{row.get('finetune_speed_vs_unsloth', '-')} speed,"
              f" x{row.get('finetune_memory_vs_unsloth', '-')} memory")
    return report


def save(report, out):
    if out:
        io.write_json_atomic(report, out)


def print_table(report):
    cap = f", training memory capped at {report['memory_cap_gib']} GiB" if report.get("memory_cap_gib") else ""
    print(f"\n{report['card']}, {report['shape']} shape, bf16 matmul peak {report['matmul_peak_tflops']} TFLOP/s{cap}")
    print(f"{'recipe':16s} {'real tok/s':>11s} {'padded tok/s':>13s} {'pad %':>6s} {'peak GiB':>9s} {'MFU':>6s} {'x 2023':>7s}")
    for recipe, m in report["train"].items():
        if not m:
            print(f"{recipe:16s} failed")
            continue
        print(f"{recipe:16s} {m['real_tokens_per_s']:11.0f} {m['padded_tokens_per_s']:13.0f} "
              f"{100 * m['padding_share']:6.1f} {m.get('peak_gpu_gib', 0):9.1f} {100 * m['mfu']:5.1f}% "
              f"{m.get('x_legacy', float('nan')):7.2f}")
    for quantization, variants in report["generation"].items():
        for variant, row in (variants or {}).items():
            print(f"generate {quantization:5s} {variant:16s} batch 1: {row['batch1']['ms_per_token']} ms/token, "
                  f"batch 32: {row['batch32']['tokens_per_s']} tokens/s, peak {row.get('peak_gpu_gib')} GiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "capped":
        capped(float(sys.argv[2]), *sys.argv[3:])
    elif len(sys.argv) > 1 and sys.argv[1] in ("legacy_2023", "generation", "data_path", "run_system"):
        name = sys.argv.pop(1)  # run_system: one system of --peers, in a process of its own
        run(globals()[name])
    else:
        run(main)
