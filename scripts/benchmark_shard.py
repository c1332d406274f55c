"""Sharded LoRA (finetune.py --fsdp) on the GPUs of one host: a random-init LLaMA of a large shape trained,
resumed from its sharded checkpoint, and its adapter checked; a table and JSON at the end.

    python scripts/benchmark_shard.py [--experiments 30b:none,65b:4bit] [--gpus 4] [--out shard.json]

Each experiment is shape:quantization[:micro_batch], the shape 7b, 13b, 30b, 65b or HIDDENxINTERMEDIATExLAYERSxHEADS
(256x768x4x4:none,256x768x4x4:4bit is a smoke run of a minute). For each:
  1. the checkpoint: random bf16 tensors generated on the GPUs and written as safetensors shards, one
     writer process per GPU, into /dev/shm where it has room (RAM: nothing waits on a disk, and finetune's
     loads read from RAM too), else --work_dir; removed after the experiment unless --keep.
  2. torchrun finetune.py --fsdp for --steps steps, saving a sharded checkpoint at the last of them;
  3. the same command resumed from that checkpoint (--resume_from_checkpoint auto) for --resume_steps more;
  4. the adapter: keys and shapes against the PEFT model built on the meta device, LoRA B non-zero.
Per-GPU peaks come from nvidia-smi polled every half second (they include loading and the CUDA
context); tokens/s and rank 0's training peak come from train_summary.json. A failed step is logged
(work_dir/<experiment>-<step>.log) and the next experiment goes on.
`python scripts/benchmark_shard.py build --shape 30b --out DIR` only writes a checkpoint.
"""

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alpaca_cot import ROOT, io, outputs  # noqa: E402
from alpaca_cot.model import tiny  # noqa: E402
from alpaca_cot.cli import UserError, as_list, lazy_import, run  # noqa: E402

torch = lazy_import("torch")  # imported on first use: the flags are checked first

INDEX = "model.safetensors.index.json"
MARKER = ".alpaca-cot-random-checkpoint"  # what build writes first: only such folders are reused or removed


def shape_of(shape: str) -> tuple:
    """A name in tiny.SHAPES, or HIDDENxINTERMEDIATExLAYERSxHEADS (a tiny one for tests and smoke runs)."""
    if shape in tiny.SHAPES:
        return tiny.SHAPES[shape]
    try:
        hidden, intermediate, layers, heads = (int(x) for x in str(shape).split("x"))
        return hidden, intermediate, layers, heads
    except ValueError:
        raise UserError(f"unknown shape {shape!r}: {', '.join(tiny.SHAPES)} or HIDDENxINTERMEDIATExLAYERSxHEADS") from None


def groups(config) -> list[list[tuple[str, tuple]]]:
    """The state dict's tensors as shard files: the embeddings, norm and head first, then one file per layer."""
    files = [[] for _ in range(config.num_hidden_layers + 1)]
    for name, shape in tiny.tensor_shapes(config).items():
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        files[0 if layer is None else int(layer) + 1].append((name, shape))
    return files


def shard_name(k: int, n: int) -> str:
    return f"model-{k + 1:05d}-of-{n:05d}.safetensors"


def write_shards(folder: str, rank: int, world: int):
    """One writer's files (every world-th), generated on its GPU (or the CPU) from a seed per file."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig.from_pretrained(folder)
    device = f"cuda:{rank}" if torch.cuda.is_available() else "cpu"
    files = groups(config)
    for k in range(rank, len(files), world):
        generator = torch.Generator(device).manual_seed(k)
        tensors = {}
        for name, shape in files[k]:
            if len(shape) == 1:  # RMSNorm weights
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                t = torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16)
                tensors[name] = t.mul_(config.initializer_range).cpu()
        save_file(tensors, str(Path(folder) / shard_name(k, len(files))), metadata={"format": "pt"})


def build(shape: str, out: str, writers: int = None, tokenizer_model: str = None) -> float:
    """Write a random-init bf16 LLaMA checkpoint of shape to out with one writer process per GPU; the seconds taken.

    Args:
        shape: 7b, 13b, 30b, 65b, or HIDDENxINTERMEDIATExLAYERSxHEADS (256x768x4x4).
        out: the checkpoint folder (new, or one this script wrote).
        writers: writer processes (the visible GPUs by default, 2 on a CPU).
        tokenizer_model: LLaMA's SentencePiece model (one is trained on the demo data without it).
    """
    started, folder = time.time(), Path(out)
    check_ours(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).touch()
    hidden, intermediate, layers, heads = shape_of(shape)
    tokenizer = tiny.save_tokenizer(folder, tokenizer_model)
    config = tiny.llama_config(tokenizer, hidden, intermediate, layers, heads, init_std=0.02)
    config.dtype = "bfloat16"
    config.save_pretrained(folder)
    writers = writers or torch.cuda.device_count() or 2
    procs = [subprocess.Popen([sys.executable, __file__, "write_shards", str(folder), str(r), str(writers)])
             for r in range(writers)]
    if any(p.wait() for p in procs):
        raise RuntimeError(f"a shard writer failed for {folder}")
    files = groups(config)
    weight_map = {name: shard_name(k, len(files)) for k, group in enumerate(files) for name, _ in group}
    size = sum(2 * torch.Size(shape).numel() for group in files for _, shape in group)
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=1))
    return round(time.time() - started, 1)


def check_ours(folder: Path):
    """Refuse a folder of someone else's: build writes into it and experiments remove it."""
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file()):
        raise UserError(f"{folder} holds files this script did not write; choose another --out or --work_dir")


class GpuPeaks:
    """Each GPU's highest memory.used (GiB) while it runs, from nvidia-smi."""

    def __init__(self):
        self.peaks, self.stop = {}, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout
            except OSError:  # no nvidia-smi: no peaks
                return
            for line in out.strip().splitlines():
                index, used = (int(x) for x in line.split(","))
                self.peaks[index] = max(self.peaks.get(index, 0), round(used / 1024, 1))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def step(name: str, args: list[str], log: Path, result: dict) -> bool:
    """Run one command with its output in log; its seconds, per-GPU peaks and exit code into result[name]."""
    print("$", " ".join(args), flush=True)
    started = time.time()
    with open(log, "w") as f, GpuPeaks() as peaks:
        rc = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    result[name] = {"rc": rc, "seconds": round(time.time() - started, 1), "gpu_peak_gib": peaks.peaks}
    print(f"  {name}: rc {rc} in {result[name]['seconds']} s; GPU peaks {peaks.peaks}; log {log}", flush=True)
    return rc == 0


def check_adapter(model: str, folder: Path, quantization: str) -> dict:
    """The saved adapter against the PEFT model built on the meta device: the same keys and shapes, B trained."""
    from peft import PeftConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    saved = load_file(folder / "adapter_model.safetensors")
    with torch.device("meta"):
        peft_model = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)),
                                    PeftConfig.from_pretrained(folder))
    from peft import get_peft_model_state_dict

    want = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    got = {k: tuple(v.shape) for k, v in saved.items()}
    b_zero = [k for k, v in saved.items() if "lora_B" in k and not v.abs().max() > 0]
    return {"keys_match": want == got, "tensors": len(got), "lora_B_all_zero": b_zero[:3], "ok": want == got and not b_zero}


def checkpoint_bytes(shape: str, vocab: int = 32000) -> int:
    hidden, intermediate, layers, _ = shape_of(shape)
    return 2 * (2 * vocab * hidden + layers * (4 * hidden ** 2 + 3 * hidden * intermediate + 2 * hidden) + hidden)


def checkpoint_home(shape: str, work: Path) -> Path:
    """/dev/shm (RAM: no disk to wait on when writing or loading) where it has room for the checkpoint, else work."""
    needed = checkpoint_bytes(shape) * 1.05
    for home in (Path("/dev/shm/alpaca-cot-shard"), work):
        if home.parent.is_dir() and shutil.disk_usage(home.parent).free > needed:
            home.mkdir(parents=True, exist_ok=True)
            return home
    raise RuntimeError(f"no room for a {needed / 2**30:.0f} GiB checkpoint in /dev/shm or {work}")


LAUNCHERS = {"torchrun": ["-m", "torch.distributed.run", "--nproc_per_node"],
             "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes"]}


def experiment(spec: str, gpus: int, steps: int, resume_steps: int, data: str, work: Path, tokenizer_model,
               keep: bool, launcher: str = "torchrun", phases=("train", "resume")) -> dict:
    shape, quantization, *rest = spec.split(":")
    micro = int(rest[0]) if rest else (8 if quantization == "4bit" else 4)
    result, tag = {"experiment": spec, "gpus": gpus, "micro_batch_size": micro, "launcher": launcher}, spec.replace(":", "-")
    model, run_dir = checkpoint_home(shape, work) / f"llama-{shape}", work / f"run-{tag}"
    check_ours(model)
    if not (model / INDEX).exists():
        result["build_seconds"] = build(shape, str(model), tokenizer_model=tokenizer_model)
    print(f"{spec}: checkpoint ready ({result.get('build_seconds', 'built before')} s)", flush=True)
    base = [sys.executable, *LAUNCHERS[launcher], str(gpus), "finetune.py", "--fsdp",
            "--base_model", str(model), "--data", data, "--skip_bad_records", "--quantization", quantization,
            "--micro_batch_size", str(micro), "--batch_size", str(micro * gpus), "--val_set_size", "0",
            "--cutoff_len", "512", "--warmup_steps", "0", "--logging_steps", "1", "--save_steps", str(steps),
            "--report_to", "none", "--output_dir", str(run_dir)]
    runs = {"train": ["--max_steps", str(steps), "--overwrite"],
            "resume": ["--max_steps", str(steps + resume_steps), "--resume_from_checkpoint", "auto"]}
    try:
        for phase in (p for p in runs if p in phases):
            if not step(phase, base + runs[phase], work / f"{tag}-{phase}.log", result):
                return result
            result[phase]["summary"] = json.loads((run_dir / "train_summary.json").read_text())
            result["adapter"] = check_adapter(str(model), run_dir, quantization)
        checkpoint = run_dir / f"checkpoint-{steps}"
        result["checkpoint_files"] = sorted(p.name for p in checkpoint.iterdir()) if checkpoint.is_dir() else None
        if "resume" in result:
            result["resume"]["resumed"] = f"resuming from {checkpoint}" in (work / f"{tag}-resume.log").read_text()
    finally:
        if not keep:
            shutil.rmtree(model, ignore_errors=True)
    return result


def check_specs(specs: list[str]):
    """Each experiment's shape, quantization and micro-batch, before a checkpoint is built for it."""
    for spec in specs:
        parts = spec.split(":")
        shape_of(parts[0])
        if len(parts) not in (2, 3) or parts[1] not in ("none", "4bit") or not all(p.isdigit() for p in parts[2:]):
            raise UserError(f"--experiments {spec!r}: shape:quantization[:micro_batch], quantization none or 4bit "
                            "(--fsdp cannot shard int8)")


def print_table(rows: list[dict]):
    print(f"\n{'experiment':16s} {'build s':>8s} {'train s':>8s} {'tok/s':>8s} {'rank0 GiB':>9s} {'sharded':>7s} "
          f"{'resume s':>8s} {'resumed':>7s} {'adapter':>7s}  per-GPU peak GiB (train)")
    for r in rows:
        train, resume = r.get("train", {}), r.get("resume", {})
        summary, files = train.get("summary", {}), r.get("checkpoint_files") or []
        print(f"{r['experiment']:16s} {r.get('build_seconds', '-')!s:>8s} {train.get('seconds', '-')!s:>8s} "
              f"{summary.get('real_tokens_per_s', '-')!s:>8s} {summary.get('peak_gpu_gib', '-')!s:>9s} "
              f"{str(any(f.startswith('pytorch_model_fsdp') for f in files)):>7s} {resume.get('seconds', '-')!s:>8s} "
              f"{resume.get('resumed', '-')!s:>7s} {r.get('adapter', {}).get('ok', '-')!s:>7s}  "
              f"{train.get('gpu_peak_gib', '-')}" + (f"  ERROR {r['error']}" if "error" in r else "")
              + "".join(f"  {k} FAILED (rc {r[k]['rc']})" for k in ("train", "resume") if r.get(k, {}).get("rc")))


def main(experiments: str = "30b:none,65b:4bit", gpus: int = None, steps: int = 4, resume_steps: int = 2,
         data: str = None, work_dir: str = None, shared: str = None, out: str = None, keep: bool = False,
         launcher: str = "torchrun", phases: str = "train,resume", overwrite: bool = False):
    """Train, resume and check sharded LoRA runs of large random-init shapes; print a table, write JSON.

    Args:
        experiments: comma-separated shape:quantization[:micro_batch] (quantization none or 4bit).
        gpus: processes (GPUs) per run; all visible ones by default.
        steps: optimizer steps of the first run (its last one saves the sharded checkpoint).
        resume_steps: further steps of the resumed run.
        data: training data; ../shared's alpaca sample, else data/demo.json.
        work_dir: runs and logs, and the checkpoints where /dev/shm has no room for them.
        shared: the folder with the LLaMA tokenizer and data (../shared by default).
        out: the JSON file written at the end (none by default).
        keep: keep each random-init checkpoint (they are removed after their experiment to free RAM or disk).
        launcher: torchrun or accelerate (accelerate launch --multi_gpu).
        phases: train (from scratch, --overwrite), resume (from the run's checkpoint-<steps>), or both; with --keep,
            train in one call and resume in the next keeps each call short.
        overwrite: replace an existing --out report (a JSON file only).
    """
    check_specs(as_list(experiments))
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: choose {' or '.join(LAUNCHERS)}")
    if not torch.cuda.is_available():
        raise UserError("the sharded benchmark needs CUDA GPUs (finetune --fsdp runs only on GPUs)")
    if out:  # the output rule (alpaca_cot/outputs.py), before the experiments
        outputs.check_outputs([outputs.Output(out, "--out", "json", 1 << 20)], (), overwrite)
    shared = Path(shared or ROOT.parent / "shared")
    tokenizer_model = shared / "tokenizers" / "llama" / "tokenizer.model"
    data = data or str(next((p for p in (shared / "data" / "alpaca_cleaned.sample.json",) if p.exists()),
                            ROOT / "data" / "demo.json"))
    work = Path(work_dir or "/tmp/alpaca-cot-shard")
    work.mkdir(parents=True, exist_ok=True)
    gpus = gpus or torch.cuda.device_count()
    import peft
    import transformers
    report = {"card": torch.cuda.get_device_name(0), "gpus": gpus, "date": time.strftime("%Y-%m-%d"),
              "work_dir": str(work), "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                                   "peft": peft.__version__}, "experiments": []}
    for spec in as_list(experiments):
        t = time.time()
        try:
            row = experiment(spec, gpus, steps, resume_steps, data, work, tokenizer_model if tokenizer_model.exists()
                             else None, keep, launcher, as_list(phases))
        except Exception as e:  # one experiment's failure must not stop the others
            row = {"experiment": spec, "error": f"{type(e).__name__}: {e}"}
        row["total_seconds"] = round(time.time() - t, 1)
        report["experiments"].append(row)
        if out:
            io.write_json_atomic(report, out)
    print_table(report["experiments"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "write_shards":
        write_shards(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "build":
        run(globals()[sys.argv.pop(1)])  # as scripts/benchmark.py dispatches its subcommands
    else:
        run(main)
