"""Merge a LoRA adapter into a base checkpoint one tensor at a time, without loading the model.

The base's safetensors files are read tensor by tensor; each weight the adapter targets gets
scale * B @ A added (in fp32, then cast to the output dtype), and each output file is written as
it is read, in the base's own layout (same file names, same index). Memory holds the adapter and
one tensor, never the model, so a 65B base merges on a machine with a few GB of RAM and no GPU.
Only what plain LoRA on linear layers saves is merged; an adapter that needs more (DoRA, saved
full modules, trained biases, embedding or conv LoRA) is refused with one line.
"""

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from alpaca_cot.model.adapters import read_weights
from alpaca_cot.cli import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
COPIED = ("config.json", "generation_config.json")
# adapter_config.json keys that change what a merge must do; each must be unset (falsy) here.
UNSUPPORTED = {"use_dora": "DoRA", "modules_to_save": "modules_to_save (full copies of modules)", "lora_bias": "lora_bias",
               "trainable_token_indices": "trainable_token_indices", "layer_replication": "layer_replication",
               "target_parameters": "target_parameters", "alora_invocation_tokens": "aLoRA (activated LoRA)",
               "megatron_config": "Megatron layers", "use_qalora": "QALoRA", "use_bdlora": "BD-LoRA",
               "arrow_config": "Arrow routing"}
# safetensors dtype names and their torch dtypes (only what this torch can hold).
STORED = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
          "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
          "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass
class Lora:
    """One targeted linear layer: delta = scale * B @ A, transposed when the weight is stored (in, out)."""
    A: torch.Tensor
    B: torch.Tensor
    scale: float
    fan_in_fan_out: bool

    def delta(self) -> torch.Tensor:
        d = (self.B.float() @ self.A.float()) * self.scale
        return d.T if self.fan_in_fan_out else d


def adapter_config(folder: Path) -> dict:
    """adapter_config.json, or a UserError naming what this merge cannot do."""
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{folder}: a {config['peft_type']} adapter; only LoRA adapters can be merged here")
    found = [name for key, name in UNSUPPORTED.items() if config.get(key)]
    if config.get("bias", "none") != "none":
        found.append(f"bias={config['bias']!r} (trained biases)")
    if found:
        raise UserError(f"{folder}: the adapter uses {', '.join(found)}, which the streaming merge does not "
                        "support; use --method peft")
    return config


def scale_of(config: dict, module: str, r: int) -> float:
    """alpha / r, or alpha / sqrt(r) with rslora; rank_pattern and alpha_pattern match as peft matches them."""
    from peft.utils.other import get_pattern_key

    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    want_r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), module), config["r"])
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), config["lora_alpha"])
    if want_r != r:
        raise UserError(f"adapter module {module}: lora_A has rank {r} but adapter_config.json says {want_r}")
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def load_adapter(folder) -> dict[str, Lora]:
    """The adapter's LoRA layers by module name (as in the base model: model.layers.0.self_attn.q_proj)."""
    folder = Path(folder)
    config = adapter_config(folder)
    pairs: dict[str, dict] = {}
    for key, tensor in read_weights(folder).items():
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight") or tensor.dim() != 2:
            raise UserError(f"{folder}: adapter tensor {key} {tuple(tensor.shape)} is not a linear layer's "
                            "lora_A/lora_B (embedding, conv or DoRA parts are not supported); use --method peft")
        pairs.setdefault(module, {})[part[0]] = tensor
    loras = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise UserError(f"{folder}: adapter module {module} has lora_{''.join(ab)} without its partner")
        r = ab["A"].shape[0]
        if ab["B"].shape[1] != r:
            raise UserError(f"{folder}: adapter module {module}: lora_A {tuple(ab['A'].shape)} and lora_B "
                            f"{tuple(ab['B'].shape)} have different ranks")
        loras[module] = Lora(ab["A"], ab["B"], scale_of(config, module, r), bool(config.get("fan_in_fan_out")))
    if not loras:
        raise UserError(f"{folder}: the adapter holds no LoRA weights")
    return loras


def base_files(folder: Path) -> tuple[list[str], dict | None]:
    """The base's safetensors files (in index order) and its index, if it has one."""
    if (folder / INDEX).is_file():
        try:
            index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
            return sorted(set(index["weight_map"].values())), index
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{folder / INDEX} is not a safetensors index (no weight_map of file names)") from None
    if (folder / SINGLE).is_file():
        return [SINGLE], None
    raise UserError(f"{folder} holds no safetensors weights ({SINGLE} or {INDEX}); the streaming merge "
                    "reads only those: use --method peft for other formats")


def read_header(path: Path) -> dict:
    """A safetensors file's tensors {name: (dtype, shape, offsets)}, metadata and where its data starts.
    Tensors are then read with plain reads, not safetensors' mmap, whose pages would count as this
    process's memory until the file is closed (a whole shard of them)."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", None) or {}
        tensors = {k: (v["dtype"], list(v["shape"]), tuple(v["data_offsets"])) for k, v in header.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, MemoryError):
        raise UserError(f"{path} cannot be read as a safetensors file (missing, truncated or damaged?)") from None
    return {"tensors": dict(sorted(tensors.items(), key=lambda kv: kv[1][2])), "metadata": metadata, "start": 8 + length}


def weight_key(module: str, keys: set[str]) -> str | None:
    """The checkpoint key of module's weight; checkpoints may store names with or without the model's
    base prefix (GPT-2's own files say h.0.attn.c_attn, the loaded model transformer.h.0.attn.c_attn)."""
    want = f"{module}.weight"
    if want in keys:
        return want
    found = [k for k in keys if want.endswith("." + k) or k.endswith("." + want)]
    return found[0] if len(found) == 1 else None


@dataclass
class Plan:
    """What the merge will read and write, checked in full before anything is written."""
    files: list[str]
    index: dict | None
    headers: dict[str, dict]
    stored: dict[str, tuple[str, list[int]]]  # every tensor: safetensors dtype, shape
    targets: dict[str, str]  # checkpoint key -> adapter module
    dtype: torch.dtype | None  # None: every tensor keeps its stored dtype

    def out_dtype(self, stored: str) -> torch.dtype:
        kind = STORED[stored]
        return self.dtype if self.dtype is not None and kind.is_floating_point else kind

    def out_bytes(self) -> int:
        return sum(math.prod(shape) * self.out_dtype(dt).itemsize for dt, shape in self.stored.values())


def plan(base: Path, loras: dict[str, Lora], dtype: torch.dtype | None, what: str) -> Plan:
    """Find each adapter module's weight in the base and check its shape; what names the pair in errors."""
    files, index = base_files(base)
    headers = {name: read_header(base / name) for name in files}
    stored = {k: v[:2] for h in headers.values() for k, v in h["tensors"].items()}
    for dt, _ in stored.values():
        if dt not in STORED:
            raise UserError(f"{base}: tensors of dtype {dt} cannot be read here")
    targets, keys = {}, set(stored)
    for module, lora in loras.items():
        key = weight_key(module, keys)
        if key is None:
            raise UserError(f"{what}: the base has no weight for adapter module {module} (trained on another "
                            "base, or a tied or renamed weight?)")
        want = [lora.B.shape[0], lora.A.shape[1]]
        want = want[::-1] if lora.fan_in_fan_out else want
        if stored[key][1] != want or not STORED[stored[key][0]].is_floating_point:
            raise UserError(f"{what}: {key} is {stored[key][0]} {stored[key][1]}, the adapter's update is {want} "
                            "(trained on another base?)")
        targets[key] = module
    return Plan(files, index, headers, stored, targets, dtype)


def write_safetensors(path: Path, entries: list[tuple[str, torch.dtype, list[int]]], tensors, metadata: dict):
    """Write a safetensors file from a header known in advance and tensors produced one at a time, so the
    file is never held in memory (safetensors' own save_file needs every tensor, and copies each)."""
    header, offset = {}, 0
    for name, dtype, shape in entries:
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": next(k for k, v in STORED.items() if v == dtype), "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {**metadata, "format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for (name, dtype, shape), tensor in zip(entries, tensors, strict=True):
            if tensor.dtype != dtype or list(tensor.shape) != shape:
                raise RuntimeError(f"{name}: produced {tensor.dtype} {list(tensor.shape)}, header says {dtype} {shape}")
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    if path.stat().st_size != 8 + len(blob) + offset:
        raise RuntimeError(f"{path}: wrote {path.stat().st_size} bytes, expected {8 + len(blob) + offset}")


def merged_tensors(f, header: dict, plan_: Plan, loras: dict[str, Lora], progress):
    """Each tensor of one file in turn, merged where the adapter targets it, in the output dtype."""
    for name, (dtype, shape, (begin, end)) in header["tensors"].items():
        tensor = torch.empty(shape, dtype=STORED[dtype])
        view = tensor.reshape(-1).view(torch.uint8).numpy()
        f.seek(header["start"] + begin)
        if view.nbytes != end - begin or f.readinto(view) != view.nbytes:
            raise UserError(f"{f.name}: a tensor's bytes do not match its header (truncated or damaged file?)")
        if name in plan_.targets:
            tensor = tensor.float() + loras[plan_.targets[name]].delta()
        tensor = tensor.to(plan_.out_dtype(dtype))
        progress.update(tensor.numel() * tensor.element_size())
        yield tensor


def merge_checkpoint(base, adapter, out, dtype: torch.dtype | None = None, what: str = "adapter") -> dict:
    """Write base + adapter into the (existing, empty) folder out; returns counts for the report."""
    from tqdm.auto import tqdm

    base, out = Path(base), Path(out)
    loras = load_adapter(adapter)
    plan_ = plan(base, loras, dtype, what)
    with tqdm(total=plan_.out_bytes(), unit="B", unit_scale=True, desc="merging") as progress:
        for file in plan_.files:
            progress.set_postfix_str(file)
            header = plan_.headers[file]
            entries = [(k, plan_.out_dtype(dt), shape) for k, (dt, shape, _) in header["tensors"].items()]
            with open(base / file, "rb") as f:
                write_safetensors(out / file, entries, merged_tensors(f, header, plan_, loras, progress),
                                  header["metadata"])
    if plan_.index is not None:
        index = {**plan_.index, "metadata": {**plan_.index.get("metadata", {}), "total_size": plan_.out_bytes()}}
        (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    copy_config(base, out, dtype)
    return dict(files=len(plan_.files), merged=len(plan_.targets), bytes=plan_.out_bytes(),
                parameters=sum(math.prod(shape) for _, shape in plan_.stored.values()))


def copy_config(base: Path, out: Path, dtype: torch.dtype | None):
    """config.json (its dtype set to the output's when --dtype changed it) and generation_config.json."""
    for name in COPIED:
        if (base / name).is_file():
            shutil.copy(base / name, out / name)
    if dtype is not None and (out / "config.json").is_file():
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        config.update({key: str(dtype).removeprefix("torch.") for key in {"dtype", "torch_dtype"} & {*config, "dtype"}})
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
