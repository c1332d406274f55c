"""Merges a LoRA adapter into its base model and saves a plain Hugging Face checkpoint.

    python scripts/export_hf_checkpoint.py --base_model PATH_OR_ID --lora_weights saved-cot7b --out DIR
        [--dtype auto|float32|bfloat16|float16] [--overwrite]

DIR then loads with `AutoModelForCausalLM.from_pretrained(DIR)` alone (safetensors weights and
the tokenizer: the adapter folder's if it holds one, else the base model's). The base is loaded
unquantized: LoRA cannot be merged into 8-bit or 4-bit weights. DIR is written into a temporary
folder beside it and renamed into place, so it is either complete or absent, never half-written.
An export carries a marker file: --overwrite replaces a previous export and nothing else, and DIR
may neither contain nor lie inside the base model or the adapter.
"""

import json
import os
import shutil
import time
from pathlib import Path

import torch

from alpaca_cot import models
from alpaca_cot.checkpoints import check_adapter, inside
from alpaca_cot.cli import UserError, run
from alpaca_cot.generation import load_adapter, tokenizer_source

MARKER = ".alpaca-cot-export.json"
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def save_atomically(model, tokenizer, out: Path, provenance: dict):
    """Save into a temporary folder beside out, then swap it in; out is complete or untouched."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp, which makes it 0700) so DIR gets the usual umask permissions.
    tmp = out.with_name(f".{out.name}.saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old = None
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
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


def main(base_model: str = None, lora_weights: str = None, out: str = None, dtype: str = "auto",
         size: int = 7, quantization: str = "none", overwrite: bool = False, device: str = "cpu"):
    """Merge the adapter in --lora_weights into --base_model and save the result to --out.

    Args:
        base_model: local folder or hub id of the base model; wins over --size.
        lora_weights: the adapter folder finetune.py saved (required).
        out: the folder the merged checkpoint is written to (required).
        dtype: precision of the merged weights: auto (the base's), float32, bfloat16 or float16.
        size: LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.
        quantization: only none: an adapter cannot be merged into quantized weights.
        overwrite: replace a --out folder that is not empty.
        device: cpu merges in main memory (no GPU needed); auto splits the model over the visible GPUs.
    """
    start = time.perf_counter()
    # ---- everything checked before a model is loaded ----
    if quantization != "none":
        raise UserError(f"--quantization {quantization}: the export merges the adapter into full-precision "
                        "weights, so the base is never quantized; drop the flag (use --dtype to pick a precision)")
    models.check_device_map(device)
    if str(dtype) not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not lora_weights:
        raise UserError("--lora_weights is required: the folder finetune.py saved the adapter to")
    if not out:
        raise UserError("--out is required: the folder to write the merged checkpoint to")
    lora_weights, out = Path(str(lora_weights)).expanduser(), Path(str(out)).expanduser()
    name = models.base_model_name(size, base_model)
    check_adapter(lora_weights)
    clean_leftovers(out)
    check_out(out, [Path(name), lora_weights], overwrite)

    tokenizer = models.load_tokenizer(tokenizer_source(lora_weights, name))
    model = merged_model(name, lora_weights, DTYPES[str(dtype)], device)
    save_atomically(model, tokenizer, out, dict(base_model=name, lora_weights=str(lora_weights), dtype=str(dtype)))
    params = sum(p.numel() for p in model.parameters())
    print(f"merged {lora_weights} into {name}: {params:,} parameters ({model.dtype}) -> {out} "
          f"in {time.perf_counter() - start:.1f}s")
    return out


if __name__ == "__main__":
    run(main)
