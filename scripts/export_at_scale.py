"""The streaming export on a real shape, without weights: write a random-init LLaMA of --shape (bf16
safetensors files of at most --shard_gib, built one tensor at a time) and a random LoRA adapter (r 8 on
q_proj,v_proj, non-zero A and B), run scripts/export_hf_checkpoint.py on them in a child process with
no GPU visible, and print its wall time and peak resident memory (the child's ru_maxrss), then check one
merged weight against base + scale * B @ A.

    CUDA_VISIBLE_DEVICES= python scripts/export_at_scale.py --shape 30b --workdir /scratch/export-30b

--workdir holds only what this script writes (base/, adapter/, merged/); a complete base/ of the same
shape from an earlier call is reused (one of another shape is rebuilt), so with --keep a call cut off
during the export can be repeated without rebuilding. Disk: the base and the merged copy (2 x 61 GiB
for 30b, 2 x 122 GiB for 65b). Everything is removed at the end unless --keep. It needs the project's requirements (fire among them) and the
package importable (run from the repository root; the export child gets PYTHONPATH set to it).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alpaca_cot import io
from alpaca_cot.model import tiny
from alpaca_cot.cli import UserError, lazy_import, run

# Imported on first use: the flags are checked before torch's seconds of importing.
torch = lazy_import("torch")
merge = lazy_import("alpaca_cot.model.merge")

ROOT = Path(__file__).resolve().parent.parent
OURS = {"base", "adapter", "merged"}
START = time.perf_counter()


def say(message: str):
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", flush=True)


def shape_tensors(shape: str):
    """(config, [(name, shape)]) of the LLaMA-1 shape, from a model built on the meta device."""
    config = tiny.llama_config(None, *tiny.SHAPES[shape], init_std=0.02)
    config.dtype = "bfloat16"
    return config, [(name, list(dims)) for name, dims in tiny.tensor_shapes(config).items()]


BLOCK = 1 << 20


def random_tensor(name: str, shape: list[int]) -> torch.Tensor:
    """Norms 1, other weights N(0, 0.02) drawn afresh for each tensor but repeating every 2^20 values:
    drawing billions of normals takes minutes on the CPU, copying a block is memory speed."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    out = torch.empty(torch.Size(shape).numel(), dtype=torch.bfloat16)
    block = torch.randn(min(BLOCK, out.numel()), dtype=torch.bfloat16).mul_(0.02)
    whole = out.numel() // block.numel() * block.numel()
    out[:whole].view(-1, block.numel()).copy_(block.expand(whole // block.numel(), -1))
    out[whole:] = block[: out.numel() - whole]
    return out.view(shape)


def build_base(folder: Path, shape: str, shard_gib: float):
    """A random bf16 base in files of at most shard_gib, with an index, config and a small tokenizer."""
    config, tensors = shape_tensors(shape)
    shards, size = [[]], 0
    for name, dims in tensors:
        nbytes = 2 * torch.Size(dims).numel()
        if shards[-1] and size + nbytes > shard_gib * 2**30:
            shards, size = [*shards, []], 0
        shards[-1].append((name, dims))
        size += nbytes
    with io.atomic_folder(folder, provenance=dict(written_by="scripts/export_at_scale.py", shape=shape)) as building:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            merge.write_safetensors(building / file, [(n, torch.bfloat16, d) for n, d in shard],
                                    (random_tensor(n, d) for n, d in shard), {})
            weight_map.update({n: file for n, _ in shard})
            say(f"base: wrote {file} ({len(shard)} tensors)")
        total = sum(2 * torch.Size(d).numel() for _, d in tensors)
        (building / merge.INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
        config.save_pretrained(building)
        with tempfile.TemporaryDirectory() as tmp:  # a tokenizer trained on the demo data, as tiny.build makes it
            small = tiny.build(Path(tmp) / "t", hidden_size=8, layers=1, heads=1)
            for file in small.iterdir():
                if file.name.startswith(("tokenizer", "special_tokens")):
                    shutil.copy(file, building / file.name)
    return sum(torch.Size(d).numel() for _, d in tensors)


def base_matches(base: Path, shape: str) -> bool:
    """base/ is a complete base (build_base's io.atomic_folder puts it in place last) of this shape."""
    try:
        config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (base / merge.INDEX).is_file() and tiny.SHAPES[shape] == tuple(config.get(k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"))


def build_adapter(folder: Path, base: Path, shape: str, r: int = 8, alpha: int = 16):
    from peft import LoraConfig
    from safetensors.torch import save_file

    _, tensors = shape_tensors(shape)
    folder.mkdir()
    generator, weights = torch.Generator().manual_seed(0), {}
    for name, (rows, cols) in ((n, d) for n, d in tensors if n.endswith(("q_proj.weight", "v_proj.weight"))):
        module = f"base_model.model.{name.removesuffix('.weight')}"
        weights[f"{module}.lora_A.weight"] = torch.randn(r, cols, generator=generator) * 0.01
        weights[f"{module}.lora_B.weight"] = torch.randn(rows, r, generator=generator) * 0.01
    save_file(weights, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
               base_model_name_or_path=str(base)).save_pretrained(str(folder))


def export(base: Path, adapter: Path, out: Path) -> tuple[float, float]:
    """Run the export in a child process without a GPU; its wall seconds and peak RSS in GiB."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), TQDM_MININTERVAL="15")
    command = [sys.executable, str(ROOT / "scripts" / "export_hf_checkpoint.py"), "--base_model", str(base),
               "--lora_weights", str(adapter), "--out", str(out), "--overwrite"]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux


def check_merge(base: Path, adapter: Path, out: Path) -> float:
    """max |merged - (base + 2 * B @ A)| over layer 0's q_proj, read back from the files."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    key = "model.layers.0.self_attn.q_proj.weight"
    index = json.loads((base / merge.INDEX).read_text())["weight_map"]
    lora = load_file(adapter / "adapter_model.safetensors")
    prefix = f"base_model.model.{key.removesuffix('.weight')}"
    with safe_open(base / index[key], "pt") as f, safe_open(out / index[key], "pt") as g:
        want = (f.get_tensor(key).float() + 2 * lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"])
        return (g.get_tensor(key).float() - want.to(torch.bfloat16).float()).abs().max().item()


def check_workdir(workdir: Path, needed: int):
    if workdir.is_file():
        raise UserError(f"--workdir {workdir} is a file")
    io.sweep(workdir)  # the temporaries of a call that was killed
    foreign = sorted(p.name for p in workdir.iterdir() if p.name not in OURS) if workdir.is_dir() else []
    if foreign:
        raise UserError(f"--workdir {workdir} holds files this script did not write ({', '.join(foreign[:3])}); "
                        "choose an empty or new folder")
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free + sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file())
    if needed > free:
        raise UserError(f"--workdir {workdir}: needs {needed / 2**30:.0f} GiB (base and merged copy), "
                        f"{free / 2**30:.0f} GiB available")


def main(shape: str = "30b", workdir: str = None, shard_gib: float = 5.0, keep: bool = False):
    """Build a random base of --shape and an adapter in --workdir, export them, print time and peak memory.

    Args:
        shape: LLaMA-1 shape: 7b, 13b, 30b or 65b.
        workdir: folder for the base, the adapter and the merged output (required; new, or this script's own).
        shard_gib: largest safetensors file of the base, in GiB (the hub's LLaMA files are 10 GB or less).
        keep: keep the files afterwards (a complete base is then reused by the next call).
    """
    if shape not in tiny.SHAPES:
        raise UserError(f"unknown --shape {shape!r}; choose one of {', '.join(tiny.SHAPES)}")
    if not workdir:
        raise UserError("--workdir is required: a new folder on a disk with room for two copies of the model")
    if not 0 < shard_gib <= 64:
        raise UserError(f"--shard_gib must be in (0, 64], got {shard_gib}")
    workdir = Path(str(workdir)).expanduser().resolve()
    _, tensors = shape_tensors(shape)
    parameters = sum(torch.Size(d).numel() for _, d in tensors)
    check_workdir(workdir, 2 * 2 * parameters + 2**30)
    base, adapter, out = workdir / "base", workdir / "adapter", workdir / "merged"
    say(f"{shape}: {parameters / 1e9:.2f}B parameters, {2 * parameters / 2**30:.1f} GiB in bf16; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads")
    if base_matches(base, shape):
        say(f"base: reusing {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)  # another shape's, from an earlier call with --keep
        build_base(base, shape, shard_gib)
        say("base: done")
    shutil.rmtree(adapter, ignore_errors=True)
    build_adapter(adapter, base, shape)
    say("adapter: r 8 on q_proj,v_proj written; export starts (CUDA_VISIBLE_DEVICES empty)")
    seconds, peak_gib = export(base, adapter, out)
    error = check_merge(base, adapter, out)
    result = dict(shape=shape, parameters=parameters, export_s=round(seconds, 1), peak_rss_gib=round(peak_gib, 2),
                  model_gib=round(2 * parameters / 2**30, 1), q_proj_max_error=error, cpus=os.cpu_count())
    say(f"export: {seconds:.1f}s, peak RSS {peak_gib:.2f} GiB for a {2 * parameters / 2**30:.1f} GiB model; "
        f"layer 0 q_proj max |merged - (W + 2BA)| = {error:.3g}")
    print(json.dumps(result), flush=True)
    if not keep:
        for name in OURS:
            shutil.rmtree(workdir / name, ignore_errors=True)
        say(f"removed what this script wrote in {workdir}")
    return result


if __name__ == "__main__":
    run(main)
