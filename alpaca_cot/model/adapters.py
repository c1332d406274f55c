"""The LoRA adapter's folder, in one place: saved as a unit, finished after an interrupted save, checked
before anything loads, and loaded from a folder or a hub id (with the tokenizer saved beside it).

The adapter is replaced as a unit: its files are staged in `.saving-<pid>-*`, the complete staging folder
is renamed to `.adapter-commit`, and then its files are moved in one by one. Whoever finds
`.adapter-commit` (the next finetune run, generate.py, the export) finishes those moves first, so
adapter_config.json and the weights always come from the same save; a `.saving-*` folder is an
unfinished save: finetune drops it, and generate.py and the export drop it once its process is dead
(io.sweep). Only safetensors weights are loaded: a pickled adapter_model.bin can run code when unpickled.
"""

import json
import os
import shutil
import struct
from pathlib import Path

from alpaca_cot import hub, io
from alpaca_cot.cli import UserError

STAGING_PREFIX = io.STAGING_PREFIX
COMMIT = ".adapter-commit"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# A fully tuned model (finetune --method full) is saved as a unit the same way: its config, its weights.
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


def holds_adapter(folder: Path) -> bool:
    """What finetune saved there: an adapter, or a fully tuned model."""
    return (folder / COMMIT).is_dir() or any((folder / f).exists() for f in ADAPTER_WEIGHTS) or holds_full_model(folder)


def holds_full_model(folder) -> bool:
    """finetune --method full's output: a whole model (its config and safetensors weights), no adapter."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists() and \
        any((folder / f).is_file() for f in MODEL_FILES[1:])


def finish_interrupted_save(folder: Path):
    """Move in the files of a committed save that a kill interrupted; drop unfinished staging folders."""
    commit = folder / COMMIT
    if commit.is_dir():
        for path in sorted(commit.iterdir(), key=lambda p: p.name in ADAPTER_FILES + MODEL_FILES):
            os.replace(path, folder / path.name)
        commit.rmdir()
    for leftover in folder.glob(STAGING_PREFIX + "*") if folder.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)


def save_adapter(model, tokenizer, folder: Path, state_dict: dict | None = None, convert_from: Path | None = None):
    """Stage the adapter and tokenizer, commit the staging folder with one rename, then move its files in.
    state_dict: the adapter's weights when the model holds only shards of them (FSDP). convert_from: the
    adapter as PiSSA or OLoRA initialised it; the saved one is then peft's conversion to a plain LoRA of twice
    the rank, which applies to the unchanged base."""
    extra = {} if state_dict is None else {"state_dict": state_dict}
    if convert_from is not None:
        extra["path_initial_model_for_weight_conversion"] = str(convert_from)

    def complete(staging: Path) -> bool:
        return all((staging / f).is_file() and (staging / f).stat().st_size > 0 for f in ADAPTER_FILES)

    _save_unit(folder, lambda staging: model.save_pretrained(staging, **extra), tokenizer, complete, "the adapter")


def save_model(model, tokenizer, folder: Path):
    """finetune --method full: the whole model and tokenizer, saved as a unit as save_adapter saves an adapter."""
    _save_unit(folder, model.save_pretrained, tokenizer, holds_full_model, "the model")


def _save_unit(folder: Path, save, tokenizer, complete, what: str):
    """Stage save(folder) and the tokenizer, check them, commit them with one rename, move them in."""
    folder.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(folder)
    staging = io.staging_folder(folder)
    try:
        save(staging)
        tokenizer.save_pretrained(staging)
        if not complete(staging):
            raise RuntimeError(f"saving {what} left it incomplete in {staging}")
        os.replace(staging, folder / COMMIT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    finish_interrupted_save(folder)


def weights_file(folder: Path) -> Path:
    """The adapter's weights, adapter_model.safetensors; a pickled adapter_model.bin alone is refused."""
    path = folder / ADAPTER_WEIGHTS[0]
    if path.is_file():
        return path
    if (folder / ADAPTER_WEIGHTS[1]).is_file():
        raise UserError(f"{folder / ADAPTER_WEIGHTS[1]}: a pickled adapter, which is not loaded (unpickling can run "
                        f"code); only {ADAPTER_WEIGHTS[0]} is: convert it where you trust it (load it with peft and "
                        "save_pretrained it again)")
    raise UserError(f"no adapter weights in {folder} ({ADAPTER_WEIGHTS[0]} missing)")


def read_weights(folder: Path) -> dict:
    """The adapter's tensors by their saved names, on the CPU."""
    from safetensors.torch import load_file

    return load_file(weights_file(folder))


def check_safetensors(path: Path):
    """A one-line error for an empty or truncated safetensors file, read from its header alone."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length)) if 8 + length <= size else None
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError):
        header = end = None
    if header is None or 8 + length + end > size:
        raise UserError(f"{path} is empty or truncated ({size} bytes): an interrupted save or copy? "
                        "train again or copy it again")


def check_adapter(lora_weights):
    """Fail before any model is loaded if lora_weights holds no complete adapter."""
    folder = Path(lora_weights)
    io.sweep(folder)  # staging folders and temporary files of saves whose process is dead
    if (folder / COMMIT).is_dir():
        try:
            finish_interrupted_save(folder)
        except OSError as e:
            raise UserError(f"{folder} holds an interrupted adapter save that could not be finished: "
                            f"{e.strerror}") from None
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"no adapter in {lora_weights} (adapter_config.json missing); train one with "
                        "finetune.py or pass --lora_weights")
    check_safetensors(weights_file(folder))


def is_hub_adapter(lora_weights) -> bool:
    """An adapter id on the hub (org/name) rather than a local folder."""
    return lora_weights is not None and "/" in str(lora_weights) and hub.is_hub_id(str(lora_weights))


def check_adapter_source(lora_weights):
    """A local adapter folder must hold a complete adapter; a hub id must be reachable."""
    if is_hub_adapter(lora_weights):
        hub.check_hub_reachable(str(lora_weights))
    else:
        check_adapter(lora_weights)


def tuned_model(lora_weights, base_model: str) -> tuple[str, str | None]:
    """(base, adapter) to load: a folder of finetune --method full holds the whole tuned model, which is then the
    base, with no adapter."""
    if lora_weights is None or is_hub_adapter(lora_weights) or not Path(lora_weights).is_dir():
        return base_model, lora_weights
    folder = Path(lora_weights)
    io.sweep(folder)  # the temporaries of dead saves; a running save's staging folder stays
    if (folder / COMMIT).is_dir() and holds_full_model(folder / COMMIT):
        finish_interrupted_save(folder)  # a full model's interrupted save (an adapter's is check_adapter's)
    return (str(Path(lora_weights).resolve()), None) if holds_full_model(lora_weights) else (base_model, lora_weights)


def tokenizer_source(lora_weights, base_name: str) -> str:
    """The adapter folder's tokenizer (finetune.py saves one there) wins over the base model's; a hub
    adapter's tokenizer is the base's."""
    if is_hub_adapter(lora_weights):
        return base_name
    if lora_weights is not None and any((Path(lora_weights) / f).is_file() for f in TOKENIZER_FILES):
        return str(lora_weights)
    return base_name


def load_adapter(model, lora_weights, base_name: str):
    """model with the LoRA adapter saved in lora_weights; a one-line UserError if it is missing or
    was trained on another base (generate.py and scripts/export_hf_checkpoint.py share this)."""
    from peft import PeftModel

    check_adapter_source(lora_weights)
    try:
        return PeftModel.from_pretrained(model, str(lora_weights))
    except RuntimeError as e:  # size mismatch: trained on another base
        first = str(e).strip().splitlines()
        raise UserError(f"adapter {lora_weights} does not fit base model {base_name} "
                        f"(trained on another base?): {first[1].strip() if len(first) > 1 else first[0]}") from None
    except (KeyError, TypeError, ValueError, OSError) as e:  # not PEFT's adapter_config.json, or no hub repo
        raise UserError(f"could not load the adapter in {lora_weights}: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
