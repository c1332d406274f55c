"""Merges a LoRA adapter into its base model and saves a plain Hugging Face checkpoint.

    python scripts/export_hf_checkpoint.py --base_model PATH_OR_ID --lora_weights saved-cot7b --out DIR
        [--dtype auto|float32|bfloat16|float16] [--method stream|peft] [--overwrite]

DIR then loads with `AutoModelForCausalLM.from_pretrained(DIR)` alone (safetensors weights and
the tokenizer: the adapter folder's if it holds one, else the base model's). The default method,
stream, never loads the model: it reads the base's safetensors files one tensor at a time, adds
the adapter's update to the weights it targets and writes each file as it reads it
(alpaca_cot/model/merge.py), so any size merges on the CPU in a few GB of memory. --method peft loads
the whole model (on the CPU, or over the GPUs with --device auto) and merges through peft: the
reference, and the way for bases stored in other formats or adapters the stream refuses.
LoRA cannot be merged into 8-bit or 4-bit weights, so the base is read unquantized. DIR follows the
output rule of alpaca_cot/outputs.py: it is written into a temporary folder beside it and swapped into
place, so it is either complete or absent, never half-written; an export carries a marker file, and
--overwrite replaces a previous export and nothing else; DIR may neither contain nor lie inside the
base model or the adapter; the room for every file is checked before anything is written.
"""

import os
from pathlib import Path

from alpaca_cot import io, outputs
from alpaca_cot.model.checks import check_device_map
from alpaca_cot.cli import UserError, run

MARKER = ".alpaca-cot-export.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")
METHODS = ("stream", "peft")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")


def torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def check_out(out: Path, sources: list[tuple[str, Path]], overwrite: bool, size: int = 0):
    """The output rule (alpaca_cot/outputs.py) for DIR: a folder, neither holding nor inside an input, writable, with
    room for size bytes; a non-empty one only with --overwrite and only if it is a previous export."""
    outputs.check_outputs([outputs.Output(out, "--out", "folder", size, MARKER)], sources, overwrite, what="a previous export")


def merged_model(base_name: str, lora_weights: Path, dtype, device: str = "cpu"):
    """Merged on the CPU by default, as alpaca-lora does: no GPU needs to hold the whole model."""
    from alpaca_cot.model import models
    from alpaca_cot.model.adapters import load_adapter

    model = models.load_model(base_name, "none", dtype, device_map=device)
    model = load_adapter(model, lora_weights, base_name)
    return model.merge_and_unload()


def base_folder(name: str) -> Path:
    """The local folder of the base: itself, or the hub snapshot of its config and safetensors files."""
    from alpaca_cot.model import merge

    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=[*merge.COPIED, merge.SINGLE, merge.INDEX,
                                                            "model-*.safetensors"]))
    except Exception as e:  # offline without a cached copy, a gated repo, ...
        raise UserError(f"could not fetch the files of base model {name}: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def tokenizer_bytes(source: str) -> int:
    """What the tokenizer's save_pretrained writes, at most: its source's files, or 64 MiB when not local."""
    folder = Path(source)
    found = sum((folder / name).stat().st_size for name in TOKENIZER_FILES if (folder / name).is_file())
    return 2 * found + (1 << 20) if found else 64 << 20


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


def written_bytes(plan, base: Path) -> int:
    """Every byte the streaming merge writes: the tensors, each file's header (the base's, and 4 KiB for a longer
    dtype name or metadata), the index and the copied config files."""
    from alpaca_cot.model import merge

    copied = [base / name for name in (*merge.COPIED, merge.INDEX) if (base / name).is_file()]
    return plan.out_bytes() + sum(h["start"] + 4096 for h in plan.headers.values()) + sum(
        p.stat().st_size + 4096 for p in copied)


def stream_writer(name: str, lora_weights: Path, dtype, tokenizer, out: Path, sources, overwrite: bool, extra: int):
    """Check everything the streaming merge needs (the room for every file included) now; write later."""
    from alpaca_cot.model import merge

    base = base_folder(name)
    dtype = None if dtype == "auto" else dtype
    plan = merge.plan(base, merge.load_adapter(lora_weights), dtype, f"adapter {lora_weights} does not fit base model {name}")
    check_out(out, sources, overwrite, written_bytes(plan, base) + extra)

    def write(folder: Path):
        stats.update(merge.merge_checkpoint(base, lora_weights, folder, dtype,
                                            f"adapter {lora_weights} does not fit base model {name}"))
        tokenizer.save_pretrained(folder)

    stats = {}
    return write, stats


def peft_writer(name: str, lora_weights: Path, dtype, tokenizer, device: str, out: Path, sources, overwrite: bool,
                extra: int):
    model = merged_model(name, lora_weights, dtype, device)
    check_out(out, sources, overwrite, sum(p.numel() * p.element_size() for p in model.parameters()) + extra)

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
    import time

    from alpaca_cot.model import models
    from alpaca_cot.model.adapters import check_adapter, holds_full_model, tokenizer_source

    start = time.perf_counter()
    # ---- everything checked before a model is loaded or a file written ----
    check_flags(quantization, device, dtype, method, lora_weights, out)
    # absolute, so that `--out .` has a name to put its temporary folder beside
    lora_weights, out = Path(str(lora_weights)).expanduser(), Path(os.path.abspath(Path(str(out)).expanduser()))
    name = models.base_model_name(size, base_model)
    if holds_full_model(lora_weights):
        raise UserError(f"{lora_weights} holds a fully tuned model (finetune --method full), not an adapter: nothing "
                        "to merge; AutoModelForCausalLM.from_pretrained loads it as it is")
    check_adapter(lora_weights)
    sources = [("--base_model", name if Path(name).exists() else None), ("--lora_weights", lora_weights)]
    check_out(out, sources, overwrite)  # before anything loads; the room is checked once the sizes are known

    source = tokenizer_source(lora_weights, name)
    tokenizer = models.load_tokenizer(source)
    extra = tokenizer_bytes(source) + (64 << 10)  # the tokenizer and the marker
    if method == "stream":
        write, stats = stream_writer(name, lora_weights, torch_dtype(str(dtype)), tokenizer, out, sources, overwrite,
                                     extra)
    else:
        write, stats = peft_writer(name, lora_weights, torch_dtype(str(dtype)), tokenizer, device, out, sources,
                                   overwrite, extra)
    with io.atomic_folder(out, MARKER, dict(base_model=name, lora_weights=str(lora_weights), dtype=str(dtype),
                                             method=method)) as folder:
        write(folder)
        if not list(folder.glob("*.safetensors")):
            raise RuntimeError(f"saving the merged model wrote no .safetensors file into {folder}")
    what = (f"{stats['merged']} weights merged, {stats['parameters']:,} parameters, {stats['bytes'] / 2**30:.2f} GiB"
            if method == "stream" else f"{stats['parameters']:,} parameters ({stats['dtype']})")
    print(f"merged {lora_weights} into {name} ({method}): {what} -> {out} in {time.perf_counter() - start:.1f}s")
    return out


if __name__ == "__main__":
    run(main)
