"""finetune's output folder: what defines a run, its checkpoints, and the plan for resuming or starting over.

An output folder holds one run: `run.json` (what defines the run: base model, data files, the
flags that change training), `checkpoint-N` folders (resumable once their trainer_state.json is
written: Trainer writes it last), the adapter the run saved last (alpaca_cot/model/adapters.py saves
it as a unit) and `train_summary.json` (the finished run's metrics and speed). `default_output_dir`
is the one rule by which finetune.py names the folder and generate.py and the export find it.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from alpaca_cot.model.adapters import TOKENIZER_FILES, finish_interrupted_save, holds_adapter
from alpaca_cot.cli import UserError
from alpaca_cot import io, outputs
from alpaca_cot.io import sha256, write_json_atomic
from alpaca_cot.outputs import inside
from alpaca_cot import config as config_lib
from alpaca_cot.train.config import FinetuneConfig
from alpaca_cot.train.resumable import run_loss

RUN_FILE = "run.json"
CHECKPOINT_PREFIX = "checkpoint-"
def run_config(f, files, n_records: int) -> dict:
    """What the run is (f: finetune's resolved flags), as logged: every flag, resolved, and what follows from them."""
    resolved = dict(base_model=f.name, lora_target_modules=f.target_modules, recipe=f.recipe or "default",
                    output_dir=str(f.output_dir))
    return {**{k: getattr(f, k) for k in vars(FinetuneConfig())}, **resolved, "files": [str(p) for p in files],
            "gradient_accumulation_steps": f.accumulation, "world_size": f.world, "records": n_records,
            **({"chat_template_sha256": f.chat_template_sha256} if getattr(f, "chat_template_sha256", None) else {})}


def run_record(config: dict, files: list[Path]) -> dict:
    """What defines a run: the flags FinetuneConfig marks as defining it (resolved, as config logs them), the
    data files' contents, the base model's config, and the chat template's hash."""
    record = config_lib.run_defining(FinetuneConfig(**{k: config[k] for k in vars(FinetuneConfig()) if k in config}))
    if "chat_template_sha256" in config:
        record["chat_template_sha256"] = config["chat_template_sha256"]
    if config.get("balance_ranks") is False:  # transformers' order depends on the number of processes
        record["world_size"] = config["world_size"]
    record["data_files"] = [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": sha256(p)}
                            for p in files]
    base_config = Path(str(config["base_model"])) / "config.json"
    if base_config.is_file():
        record["base_model_config_sha256"] = sha256(base_config)
    return json.loads(json.dumps(record))  # as it reads back from run.json (tuples become lists)


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def differences(stored: dict | None, record: dict) -> list[str]:
    if stored is None:
        return [f"no {RUN_FILE}"]
    return sorted(k for k in set(stored) | set(record) if stored.get(k) != record.get(k))


# ---- checkpoints ----

def checkpoint_step(path: Path) -> int | None:
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and path.is_dir() else None


def checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def is_complete(checkpoint: Path) -> bool:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state


def last_complete(folder: Path, warn=print) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the newer half-written ones (skipped with a warning)."""
    incomplete = []
    for checkpoint in reversed(checkpoints(folder)):
        if is_complete(checkpoint):
            return checkpoint, incomplete
        warn(f"warning: skipping {checkpoint}: half-written (no complete trainer_state.json)")
        incomplete.append(checkpoint)
    return None, incomplete


# ---- the output folder's rules ----

def default_output_dir(data, size, base_model=None) -> str:
    """Where finetune.py saves and generate.py looks: saved-cot7b for --size (the 2023 repo's names), and
    saved-{data}-{base model's name} for --base_model (saved-cot-llama-13b), so that bases never share one."""
    from alpaca_cot.data.catalog import name_of

    if not base_model:
        return f"saved-{name_of(data)}{size}b"
    base = Path(str(base_model).rstrip("/\\")).name
    base = base[: -len(".gguf")] if base.endswith(".gguf") else base
    return f"saved-{name_of(data)}-{base.lower()}"


def check_output_dir(output_dir: Path, inputs=(), flag: str = "--output_dir"):
    """The output rule (outputs.check_outputs) for finetune's folder: not a file, writable, and neither holding nor
    inside an input; what it may already hold is plan()'s to decide. Writes nothing."""
    outputs.check_outputs([outputs.Output(output_dir, flag, "folder", existing="own")], inputs)



@dataclass
class Plan:
    """What finetune will do in its output folder: resume from, and what to remove first."""
    resume: Path | None = None
    remove: list[Path] = field(default_factory=list)
    note: str = ""


def _explicit_checkpoint(path: Path, output_dir: Path, record: dict, overwrite: bool) -> Plan:
    if not is_complete(path):
        raise UserError(f"--resume_from_checkpoint {path} is not a complete checkpoint (no trainer_state.json)")
    if not inside(path, output_dir):
        differ = differences(read_record(path.parent), record) if (path.parent / RUN_FILE).exists() else []
        if differ:
            raise UserError(f"--resume_from_checkpoint {path} is from a different run ({', '.join(differ)} "
                            "differ); resume with that run's flags and data")
        if holds_adapter(output_dir) and not overwrite:
            raise UserError(f"{output_dir} already holds a trained adapter; resuming {path} there would train "
                            "over it: pass another --output_dir or --overwrite")
    return Plan(resume=path)


def plan(output_dir: Path, record: dict, base_model: str, resume, overwrite: bool, warn=print, inputs=()) -> Plan:
    """Check finetune's output folder before anything is loaded; nothing is written here. inputs: (flag, path)
    of the data files beside the base model, which the folder may not hold."""
    check_output_dir(output_dir, [("--base_model", base_model if Path(base_model).exists() else None), *inputs])
    adapter = holds_adapter(output_dir)
    if adapter and not (overwrite or resume):
        raise UserError(f"{output_dir} already holds a trained adapter; pass another --output_dir, "
                        "--resume_from_checkpoint auto, or --overwrite")
    found = checkpoints(output_dir)
    differ = differences(read_record(output_dir), record) if found else []
    if differ and not overwrite:
        raise UserError(f"the checkpoints in {output_dir} are from a different run ({', '.join(differ)} differ); "
                        "pass the same flags and data to resume, or --overwrite to clear them")
    if resume not in (None, False, "auto", True):
        if differ and inside(resume, output_dir):
            raise UserError(f"--resume_from_checkpoint {resume} is from a different run ({', '.join(differ)} "
                            "differ), and --overwrite clears it")
        return _explicit_checkpoint(Path(str(resume)), output_dir, record, overwrite)
    if differ or (overwrite and not resume):
        return Plan(remove=found, note=f"clearing {len(found)} checkpoints of an earlier run" if found else "")
    if not resume:
        if found:
            raise UserError(f"{output_dir} already holds checkpoints of this run; pass --resume_from_checkpoint "
                            "auto to continue it, or --overwrite to start afresh")
        return Plan()
    last, incomplete = last_complete(output_dir, warn)
    if last is None and adapter and not overwrite:
        raise UserError(f"{output_dir} holds an adapter but no checkpoint to resume from; pass --overwrite "
                        "to train a new one over it, or another --output_dir")
    return Plan(resume=last, remove=incomplete,
                note=f"resuming from {last}" if last else "no checkpoint to resume from; starting fresh")


def claim(output_dir: Path, record: dict, plan: Plan):
    """Carry out the plan (main process only): finish or drop interrupted saves, clear, record the run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    io.sweep(output_dir)
    finish_interrupted_save(output_dir)
    for path in plan.remove:
        shutil.rmtree(path)
    write_json_atomic(record, output_dir / RUN_FILE)


def expected_bytes(f, n_train: int, trainable: int) -> int:
    """The bytes a run (f: finetune's resolved flags) writes into its output folder, at most: the adapter (4 bytes
    a trainable parameter) and the tokenizer, and in each kept checkpoint the adapter, Adam's two moments, the
    tokenizer and the states; the traces of --profile_steps."""
    steps = f.max_steps if f.max_steps > 0 else -(-n_train // f.batch_size) * f.num_epochs
    kept = int(steps // f.save_steps)
    kept = min(kept, f.save_total_limit) if f.save_total_limit else kept
    base = Path(str(f.name))
    tokenizer = sum((base / name).stat().st_size for name in TOKENIZER_FILES if (base / name).is_file()) or 16 << 20
    adapter = 4 * trainable + tokenizer + (1 << 20)
    return adapter + kept * (adapter + 8 * trainable) + (256 << 20 if f.profile_steps else 0)


def write_summary(folder: Path, metrics: dict, log_history: list[dict], speed: dict, log=print, **extra):
    """train_summary.json, with the loss of the whole run (resumed parts and every rank included)."""
    summary = dict(metrics, **speed, **extra)
    loss = run_loss(log_history)
    if loss is not None:
        summary["train_loss"] = loss
    write_json_atomic(summary, folder / "train_summary.json")
    if speed:
        log("speed: " + ", ".join(f"{k} {v}" for k, v in speed.items()))
    log(f"saved the adapter to {folder} in {summary.get('seconds')} s")
