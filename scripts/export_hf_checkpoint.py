"""Merges a LoRA adapter into its base model and saves a plain Hugging Face checkpoint.

    python scripts/export_hf_checkpoint.py --base_model PATH_OR_ID --lora_weights saved-cot7b --out DIR
        [--dtype auto|float32|bfloat16|float16] [--method stream|peft] [--overwrite]

DIR then loads with `AutoModelForCausalLM.from_pretrained(DIR)` alone (safetensors weights and
the tokenizer: the adapter folder's if it holds one, else the base model's). The default method,
stream, never loads the model: it reads the base's safetensors files one tensor at a time, adds
the adapter's update to the weights it targets and writes each file as it reads it
(alpaca_cot/merge.py), so any size merges on the CPU in a few GB of memory. --method peft loads
the whole model (on the CPU, or over the GPUs with --device auto) and merges through peft: the
reference, and the way for bases stored in other formats or adapters the stream refuses.
LoRA cannot be merged into 8-bit or 4-bit weights, so the base is read unquantized. DIR is
written into a temporary folder beside it and renamed into place, so it is either complete or
absent, never half-written. An export carries a marker file: --overwrite replaces a previous
export and nothing else, and DIR may neither contain nor lie inside the base model or the adapter.
"""

import json
import os
import shutil
import time
from pathlib import Path

import torch

from alpaca_cot import merge, models
from alpaca_cot.adapters import check_adapter, load_adapter, tokenizer_source
from alpaca_cot.checkpoints import inside
from alpaca_cot.checks import check_device_map
from alpaca_cot.cli import UserError, run

MARKER = ".alpaca-cot-export.json"
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
METHODS = ("stream", "peft")


def check_out(out: Path, sources: list[Path], overwrite: bool):
    """Refuse a DIR that would lose data: a file, a folder holding or inside an input, a non-empty folder
    (without --overwrite, or that is not a previous export)."""
    if out.is_file():
        raise UserError(f"--out {out} is a file, not a folder")
    for source in sources:
        if source.exists() and (inside(out, source) or inside(source, out)):
            raise UserError(f"--out {out} contains or is inside {source}, which the model is read from; "
                            "choose another folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out} already exists and is not empty; pass --overwrite to replace it")
        if not (out / MARKER).is_file():
            raise UserError(f"--out {out} is not a previous export (no {MARKER}); --overwrite replaces only "
                            "an export: choose another folder")


def clean_leftovers(out: Path):
    """Temporary folders of a killed export: an unfinished one is dropped, a replaced one put back if needed."""
    for old in sorted(out.parent.glob(f".{out.name}.old-*")) if out.parent.is_dir() else ():
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, out)
    for tmp in out.parent.glob(f".{out.name}.saving-*") if out.parent.is_dir() else ():
        shutil.rmtree(tmp, ignore_errors=True)


def merged_model(base_name: str, lora_weights: Path, dtype, device: str = "cpu"):
    """Merged on the CPU by default, as alpaca-lora does: no GPU needs to hold the whole model."""
    model = models.load_model(base_name, "none", dtype, device_map=device)
    model = load_adapter(model, lora_weights, base_name)
    return model.merge_and_unload()


def base_folder(name: str) -> Path:
    """The local folder of the base: itself, or the hub snapshot of its config and safetensors files."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=[*merge.COPIED, merge.SINGLE, merge.INDEX,
                                                            "model-*.safetensors"]))
    except Exception as e:  # offline without a cached copy, a gated repo, ...
        raise UserError(f"could not fetch the files of base model {name}: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def check_space(out: Path, needed: int):
    """Refuse before writing when the disk under out cannot hold the merged checkpoint."""
    probe = out.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise UserError(f"--out {out}: the merged checkpoint needs {needed / 2**30:.2f} GiB, {probe} has "
                        f"{free / 2**30:.2f} GiB free")


def save_atomically(write, out: Path, provenance: dict):
    """write(folder) fills a temporary folder beside out, which is then swapped in; out is complete or untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp, which makes it 0700) so DIR gets the usual umask permissions.
    tmp = out.with_name(f".{out.name}.saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old = None
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(provenance, indent=2) + "\n")
        if not list(tmp.glob("*.safetensors")):
            raise RuntimeError(f"saving the merged model wrote no .safetensors file into {tmp}")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_flags(quantization, device, dtype, method, lora_weights, out):
    if quantization != "none":
        raise UserError(f"--quantization {quantization}: the export merges the adapter into full-precision "
                        "weights, so the base is never quantized; drop the flag (use --dtype to pick a precision)")
    check_device_map(device)
    if str(dtype) not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "stream" and device != "cpu":
        raise UserError(f"--device {device} is for --method peft: the streaming merge runs on the CPU and needs no GPU")
    if not lora_weights:
        raise UserError("--lora_weights is required: the folder finetune.py saved the adapter to")
    if not out:
        raise UserError("--out is required: the folder to write the merged checkpoint to")


def stream_writer(name: str, lora_weights: Path, dtype, tokenizer, out: Path):
    """Check everything the streaming merge needs (disk space included) now; write later."""
    base = base_folder(name)
    dtype = None if dtype == "auto" else dtype
    plan = merge.plan(base, merge.load_adapter(lora_weights), dtype, f"adapter {lora_weights} does not fit base model {name}")
    check_space(out, plan.out_bytes())

    def write(folder: Path):
        stats.update(merge.merge_checkpoint(base, lora_weights, folder, dtype,
                                            f"adapter {lora_weights} does not fit base model {name}"))
        tokenizer.save_pretrained(folder)

    stats = {}
    return write, stats


def peft_writer(name: str, lora_weights: Path, dtype, tokenizer, device: str):
    model = merged_model(name, lora_weights, dtype, device)

    def write(folder: Path):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return write, dict(parameters=sum(p.numel() for p in model.parameters()), dtype=str(model.dtype))


def main(base_model: str = None, lora_weights: str = None, out: str = None, dtype: str = "auto",
         size: int = 7, quantization: str = "none", overwrite: bool = False, device: str = "cpu",
         method: str = "stream"):
    """Merge the adapter in --lora_weights into --base_model and save the result to --out.

    Args:
        base_model: local folder or hub id of the base model; wins over --size.
        lora_weights: the adapter folder finetune.py saved (required).
        out: the folder the merged checkpoint is written to (required).
        dtype: precision of the merged weights: auto (the base's), float32, bfloat16 or float16.
        size: LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.
        quantization: only none: an adapter cannot be merged into quantized weights.
        overwrite: replace a --out folder that is not empty.
        device: cpu merges in main memory (no GPU needed); auto splits the model over the visible GPUs (--method peft).
        method: stream reads and writes one tensor at a time (any size, a few GB of memory, no GPU); peft loads
            the whole model and merges through peft (bases not in safetensors, adapters the stream refuses).
    """
    start = time.perf_counter()
    # ---- everything checked before a model is loaded or a file written ----
    check_flags(quantization, device, dtype, method, lora_weights, out)
    # absolute, so that `--out .` has a name to put its temporary folder beside
    lora_weights, out = Path(str(lora_weights)).expanduser(), Path(os.path.abspath(Path(str(out)).expanduser()))
    name = models.base_model_name(size, base_model)
    check_adapter(lora_weights)
    clean_leftovers(out)
    check_out(out, [Path(name), lora_weights], overwrite)

    tokenizer = models.load_tokenizer(tokenizer_source(lora_weights, name))
    if method == "stream":
        write, stats = stream_writer(name, lora_weights, DTYPES[str(dtype)], tokenizer, out)
    else:
        write, stats = peft_writer(name, lora_weights, DTYPES[str(dtype)], tokenizer, device)
    save_atomically(write, out, dict(base_model=name, lora_weights=str(lora_weights), dtype=str(dtype), method=method))
    what = (f"{stats['merged']} weights merged, {stats['parameters']:,} parameters, {stats['bytes'] / 2**30:.2f} GiB"
            if method == "stream" else f"{stats['parameters']:,} parameters ({stats['dtype']})")
    print(f"merged {lora_weights} into {name} ({method}): {what} -> {out} in {time.perf_counter() - start:.1f}s")
    return out


if __name__ == "__main__":
    run(main)
