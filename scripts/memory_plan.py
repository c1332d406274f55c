"""Memory plan: peak GPU memory per GPU and speed of LoRA training (r 8 on q_proj,v_proj) for the LLaMA-1
shapes x quantization x layout (one GPU; device_map over N GPUs; FSDP over N GPUs), as a Markdown table.

    python scripts/memory_plan.py                    # finetune.py's defaults, cutoff 512
    python scripts/memory_plan.py --micro_batch_size 4 --gpus 2,4,8

Estimates are on paper: parameter counts from the shape configs, bytes per weight for each quantization,
the LoRA weights with fp32 gradients and Adam states, and activations per token per layer per hidden unit,
calibrated on measured 7B peaks (CALIBRATION: benchmarks/h100.json with fused kernels, h200-unfused.json
without, which FSDP runs) at micro-batch x cutoff tokens (peaks are for batches of the longest records).
Speeds scale the measured 7B speed by parameters (compute per token is proportional to them). Measured
cells (h100.json, and the optional benchmarks/memory-plan-measured.json) replace estimates and are marked.
"""

import json
import math
from pathlib import Path

from alpaca_cot.model import checks

from alpaca_cot.model import tiny
from alpaca_cot.cli import UserError, as_list, run
from alpaca_cot.train.recipes import default_gradient_checkpointing, default_micro_batch_size

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
VOCAB = 32000
CARD_GIB = 78  # what an 80 GB card leaves a process (the benchmarks' cap)
QUANTIZATIONS = ("none", *(q for q in checks.QUANTIZATIONS if q != "none"))  # the table's row order
# Bytes per weight of a quantized linear layer: int8 with one fp32 scale per output row (added per row);
# nf4 with double quantization: 4 bits + an 8-bit absmax per 64 weights + an fp32 scale per 256 absmaxes.
LINEAR_BYTES = {"none": 2.0, "8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}
ROW_SCALE_BYTES = {"none": 0, "8bit": 4, "4bit": 0}
LORA_R = 8  # on q_proj and v_proj, each r x (hidden + hidden)
LORA_BYTES = 4 + 4 + 8  # fp32 weight, gradient, Adam's two moments
BENCH_CUTOFF = 512  # the benchmarks' cutoff
# The 7B measurements each activation coefficient is calibrated on: (compute, checkpointing, fused kernels) ->
# (file, recipe, quantization, micro-batch). bf16 and 4-bit compute in bf16 and share a coefficient; int8
# matmuls keep more per token; without fused kernels the logits and the unfused norms and MLP cost more.
CALIBRATION = {("bf16", False, True): ("h100.json", "none", "none", 32),
               ("bf16", True, True): ("h100.json", "4bit", "4bit", 16),
               ("int8", False, True): ("h100.json", "8bit", "8bit", 16),
               ("bf16", False, False): ("h200-unfused.json", "none", "none", 16),
               ("bf16", True, False): ("h200-unfused.json", "4bit:8:ckpt", "4bit", 8),
               ("int8", False, False): ("h200-unfused.json", "8bit", "8bit", 16)}
# FSDP and device_map run without fused kernels (alpaca_cot/model/sharding.py keeps Liger off there): their speed against fused,
# measured at the same micro-batch in one run.
UNFUSED_SPEED = ("h200-fused.json", "none:unfused", "none:fused")
MEASURED = {"h100.json": ("7b", ("none", "4bit", "8bit"))}  # default-recipe 1-GPU cells in the benchmark files
EXTRA = ROOT / "benchmarks" / "memory-plan-measured.json"
SCALING_FILE = ("h200x2-ddp.json", "per_gpu_scaling")  # measured per-GPU efficiency of data parallelism
# FSDP's speed against data parallelism (DDP) at the same micro-batch, measured at 7B on 2 GPUs: the gathers of
# each layer's shards cost what DDP does not pay.
FSDP_SPEED = ("h100x2-layouts-7b.json", "fsdp", "ddp")


def parameters(shape: str) -> dict:
    """Parameter counts of a LLaMA-1 shape by part, from its config (hidden, MLP, layers, heads)."""
    hidden, mlp, layers, _ = tiny.SHAPES[shape]
    per_layer = 4 * hidden * hidden + 3 * hidden * mlp
    return dict(embed=VOCAB * hidden, head=VOCAB * hidden, linear=layers * per_layer, norms=(2 * layers + 1) * hidden,
                lora=layers * 2 * LORA_R * 2 * hidden, layers=layers, hidden=hidden, per_layer=per_layer,
                total=2 * VOCAB * hidden + layers * per_layer + (2 * layers + 1) * hidden)


def weight_bytes(shape: str, quantization: str) -> dict:
    """Bytes of the frozen base: per decoder layer, and the embedding and the head (kept in bf16)."""
    p = parameters(shape)
    hidden, mlp = p["hidden"], tiny.SHAPES[shape][1]
    rows = 4 * hidden + 2 * mlp + hidden  # output rows of q,k,v,o, gate,up, down
    layer = p["per_layer"] * LINEAR_BYTES[quantization] + rows * ROW_SCALE_BYTES[quantization] + 2 * 2 * hidden
    return dict(layer=layer, embed=2 * p["embed"], head=2 * p["head"] + 2 * hidden, lora_layer=LORA_BYTES * 2 * LORA_R * 2 * hidden)


def family(quantization: str) -> str:
    return "int8" if quantization == "8bit" else "bf16"


def defaults(quantization: str, micro_batch_size=None, fused: bool = True) -> tuple[int, bool]:
    """finetune.py's micro-batch and checkpointing, with or without liger-kernel's fused kernels."""
    return (micro_batch_size or default_micro_batch_size(quantization, fused),
            default_gradient_checkpointing(quantization))


def one_gpu_fixed(shape: str, quantization: str) -> float:
    w = weight_bytes(shape, quantization)
    layers = parameters(shape)["layers"]
    return layers * (w["layer"] + w["lora_layer"]) + w["embed"] + w["head"]


def load(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / name).read_text(encoding="utf-8"))


def activation_coefficients() -> dict:
    """Bytes per token per layer per hidden unit, (compute, checkpointing, fused) -> k, from the 7B
    measurements: peak = weights + LoRA states + k x tokens x layers x hidden, tokens = micro-batch x cutoff."""
    p, k = parameters("7b"), {}
    for key, (file, recipe, quantization, micro) in CALIBRATION.items():
        peak = load(file)["train"][recipe]["peak_gpu_gib"] * GIB
        k[key] = (peak - one_gpu_fixed("7b", quantization)) / (micro * BENCH_CUTOFF * p["layers"] * p["hidden"])
    return k


def estimate_gib(shape: str, quantization: str, layout: str, gpus: int, micro: int, ckpt: bool, cutoff: int,
                 k: dict, fused: bool | None = None) -> float | None:
    """Peak GiB on the busiest GPU; None where the layout cannot run the quantization. Fused kernels by
    default on one GPU only (finetune.py keeps them off under FSDP and device_map)."""
    p, w = parameters(shape), weight_bytes(shape, quantization)
    key = (family(quantization), ckpt, layout == "1 GPU" if fused is None else fused)
    if key not in k:
        return None
    activations = k[key] * micro * cutoff * p["hidden"]  # per layer
    layer = w["layer"] + w["lora_layer"]
    if layout == "1 GPU":
        peak = p["layers"] * (layer + activations) + w["embed"] + w["head"]
    elif layout == "device_map":  # one process; each GPU holds its layers and their activations
        peak = math.ceil(p["layers"] / gpus) * (layer + activations) + max(w["embed"], w["head"])
    elif quantization == "8bit":  # FSDP: bitsandbytes' int8 weights cannot be sharded
        return None
    else:  # FSDP: everything sharded, a layer gathered while the next is prefetched; each rank its own micro-batch
        peak = (p["layers"] * layer + w["embed"] + w["head"]) / gpus + 2 * max(w["layer"], w["head"])
        peak += p["layers"] * activations
    return peak / GIB


def tokens_per_s(shape: str, quantization: str, layout: str, gpus: int, rates: dict) -> float:
    """The measured 7B speed scaled by parameters; device_map runs one GPU at a time, FSDP all of them at the
    measured data-parallel efficiency times FSDP's measured speed against DDP, both unfused."""
    rate = rates[quantization] * parameters("7b")["total"] / parameters(shape)["total"]
    if layout == "1 GPU":
        return rate
    file, unfused, fused = UNFUSED_SPEED
    speeds = load(file)["train"]
    rate *= speeds[unfused]["real_tokens_per_s"] / speeds[fused]["real_tokens_per_s"]
    if layout == "device_map":
        return rate
    file, fsdp, ddp = FSDP_SPEED
    runs = load(file)["runs"]
    fsdp_vs_ddp = runs[fsdp]["real_tokens_per_s"] / runs[ddp]["real_tokens_per_s"]
    return rate * gpus * load(SCALING_FILE[0])[SCALING_FILE[1]] * fsdp_vs_ddp


def measured_cells(micro_of, cutoff: int) -> dict:
    """(shape, quantization, layout, gpus) -> (GiB, tokens/s, source) for cells measured at this plan's
    micro-batch and cutoff: h100.json's defaults and the optional benchmarks/memory-plan-measured.json,
    {"cells": [{"shape": "13b", "quantization": "4bit", "layout": "FSDP", "gpus": 2, "micro_batch_size": 16,
    "cutoff_len": 512, "peak_gpu_gib": ..., "real_tokens_per_s": ..., "card": ...}]} (layout: 1 GPU,
    device_map or FSDP; real_tokens_per_s may be null)."""
    cells = {}
    for file, (shape, recipes) in MEASURED.items():
        for q in recipes:
            row = load(file)["train"][q]
            if micro_of(q, "1 GPU") == defaults(q)[0] and cutoff == BENCH_CUTOFF:
                cells[shape, q, "1 GPU", 1] = (row["peak_gpu_gib"], row["real_tokens_per_s"], file)
    if EXTRA.is_file():
        for c in json.loads(EXTRA.read_text(encoding="utf-8"))["cells"]:
            if c["micro_batch_size"] == micro_of(c["quantization"], c["layout"]) and c["cutoff_len"] == cutoff:
                cells[c["shape"], c["quantization"], c["layout"], c["gpus"]] = (
                    c["peak_gpu_gib"], c.get("real_tokens_per_s"), EXTRA.name)
    return cells


def plan(micro_batch_size=None, cutoff_len: int = BENCH_CUTOFF, gpus=(2, 4)) -> list[dict]:
    """Every cell: shape, quantization, layout, gpus, GiB, tokens/s (None where not estimated), source."""
    k = activation_coefficients()
    rates = {q: load("h100.json")["train"][q]["real_tokens_per_s"] for q in QUANTIZATIONS}
    micro_of = lambda q, layout: defaults(q, micro_batch_size, layout == "1 GPU")[0]  # noqa: E731
    measured = measured_cells(micro_of, cutoff_len)
    cells = []
    for shape in tiny.SHAPES:
        for q in QUANTIZATIONS:
            for layout, n in [("1 GPU", 1)] + [(lay, n) for lay in ("device_map", "FSDP") for n in gpus]:
                micro, ckpt = defaults(q, micro_batch_size, layout == "1 GPU")
                gib = estimate_gib(shape, q, layout, n, micro, ckpt, cutoff_len, k)
                speed = None if gib is None or micro_batch_size else tokens_per_s(shape, q, layout, n, rates)
                cell = dict(shape=shape, quantization=q, layout=layout, gpus=n, gib=gib, tokens_per_s=speed,
                            source="estimate")
                if (shape, q, layout, n) in measured:
                    cell.update(zip(("gib", "tokens_per_s", "source"), measured[shape, q, layout, n]))
                cells.append(cell)
    return cells


def cell_text(cell: dict) -> str:
    if cell["gib"] is None:
        return "n/a"
    text = f"{cell['gib']:.1f}"
    if cell["tokens_per_s"]:
        text += f" / {cell['tokens_per_s'] / 1000:.1f}k"
    if cell["source"] != "estimate":
        text = f"**{text}** m"
    return text + (" ✗" if cell["gib"] > CARD_GIB else "")


def table(cells: list[dict]) -> str:
    columns = list(dict.fromkeys((c["layout"], c["gpus"]) for c in cells))
    names = [lay if n == 1 else f"{lay} x{n}" for lay, n in columns]
    lines = ["| shape | quantization | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    rows = dict.fromkeys((c["shape"], c["quantization"]) for c in cells)
    by_key = {(c["shape"], c["quantization"], c["layout"], c["gpus"]): c for c in cells}
    for shape, q in rows:
        lines.append(f"| {shape} | {q} | " + " | ".join(cell_text(by_key[shape, q, *col]) for col in columns) + " |")
    return "\n".join(lines)


def largest_micro(shape: str, q: str, layout: str, n: int, cutoff: int, k: dict) -> int:
    """The largest micro-batch (at most the default) whose estimate fits; 0 if none does."""
    micro, ckpt = defaults(q, None, layout == "1 GPU")
    fits = [m for m in range(micro, 0, -1) if (estimate_gib(shape, q, layout, n, m, ckpt, cutoff, k) or math.inf) <= CARD_GIB]
    return fits[0] if fits else 0


def smallest_fits(cells: list[dict], cutoff: int) -> str:
    """Per shape and quantization, the fewest GPUs that fit (then the fastest layout); where none fits at
    the default micro-batch, the largest micro-batch that fits on the most GPUs planned."""
    lines, k = [], activation_coefficients()
    for shape in dict.fromkeys(c["shape"] for c in cells):
        options = []
        for q in QUANTIZATIONS:
            mine = [c for c in cells if (c["shape"], c["quantization"]) == (shape, q) and c["gib"] is not None]
            fits = [c for c in mine if c["gib"] <= CARD_GIB]
            best = min(fits, key=lambda c: (c["gpus"], -(c["tokens_per_s"] or 0)), default=None)
            name = lambda c: c["layout"] + (f" x{c['gpus']}" if c["gpus"] > 1 else "")  # noqa: E731
            if best:
                options.append(f"{q}: {name(best)} ({best['gib']:.0f} GiB)")
                continue
            widest = [c for c in mine if c["gpus"] == max(c["gpus"] for c in mine)]
            micros = {name(c): largest_micro(shape, q, c["layout"], c["gpus"], cutoff, k) for c in widest}
            options.append(f"{q}: " + ", ".join(f"{n} at micro-batch {m}" if m else f"not {n}" for n, m in micros.items()))
        lines.append(f"- {shape}: " + "; ".join(options))
    return "\n".join(lines)


def main(micro_batch_size: int = None, cutoff_len: int = BENCH_CUTOFF, gpus: str = "2,4"):
    """Print the memory plan as Markdown: GiB per GPU / real tokens per second, and what fits 80 GB.

    Args:
        micro_batch_size: records per micro-batch on each GPU; default finetune.py's (32 for bf16, 16 for 8/4-bit).
        cutoff_len: tokens per record at the peak (the batches of the longest records).
        gpus: comma-separated GPU counts for the device_map and FSDP columns.
    """
    counts = [int(n) if str(n).isdigit() else n for n in as_list(gpus)]
    if not counts or not all(isinstance(n, int) and n >= 2 for n in counts):
        raise UserError(f"--gpus must be comma-separated integers of at least 2, got {gpus!r}")
    if micro_batch_size is not None and (not isinstance(micro_batch_size, int) or micro_batch_size < 1):
        raise UserError(f"--micro_batch_size must be a positive integer, got {micro_batch_size!r}")
    if not isinstance(cutoff_len, int) or cutoff_len < 1:
        raise UserError(f"--cutoff_len must be a positive integer, got {cutoff_len!r}")
    cells = plan(micro_batch_size, cutoff_len, counts)
    print(table(cells))
    print(f"\nFewest GPUs of {CARD_GIB} GiB each that fit:\n" + smallest_fits(cells, cutoff_len))
    return cells


if __name__ == "__main__":
    run(main)
