"""The ablation study of Alpaca-CoT: what CoT data, Chinese data and a CoT prompt do to a model.

One run (scripts/study.py) does four steps, each skipped when its output already exists, so a
killed study continues where it stopped:
1. prepare: hold evaluation records out of every source (seeded), draw the same number of training
   records from each source, drop any training record that repeats an evaluation question, and check
   that none is left;
2. train: one LoRA adapter per mix (alpaca, alpaca-cot, alpaca-belle, alpaca-belle-cot), all with the
   same hyperparameters and seed;
3. evaluate: the untuned base and every adapter on the same held-out sets, FLAN CoT questions
   without and with the CoT trigger;
4. report: report.md with tables, figures and answers side by side (alpaca_cot/report.py).
"""

import json
import random
import subprocess
import time
from pathlib import Path

from . import ROOT, cot, data, dedup, evaluation
from .cli import UserError
from .io import write_json_atomic, write_jsonl_atomic

MIXES = ("alpaca", "alpaca-cot", "alpaca-belle", "alpaca-belle-cot")
SOURCES = ("alpaca", "belle", "cot")


def key(record: dict) -> str:
    """cot.question_key of instruction and input. Not dedup.normalise: the held-out draw samples these keys
    sorted, so a stronger normalisation would re-draw the committed study (dedup still checks for leaks)."""
    return cot.question_key(f"{record['instruction']} {record.get('input', '')}")


def split_records(records: list[dict], n_eval: int, rng: random.Random) -> tuple[list, list]:
    """n_eval records with a reference for evaluation; the rest, less any that repeat one of them."""
    groups = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    usable = [k for k, rs in groups.items() if not rs[0]["output"].lower().startswith("<nooutput>")]
    if n_eval > len(usable):
        raise UserError(f"asked to hold out {n_eval} records, but the source has {len(usable)} distinct ones")
    held = set(rng.sample(sorted(usable), n_eval))
    return [groups[k][0] for k in sorted(held)], [r for r in records if key(r) not in held]


def draw(records: list[dict], n: int, name: str, rng: random.Random) -> list[dict]:
    if n > len(records):
        raise UserError(f"--records_per_source {n}: {name} has only {len(records)} training records after "
                        "holding out the evaluation records; lower it")
    return rng.sample(records, n)


def decontaminate(train: dict, evaluation_items: list[dict]) -> tuple[dict, int]:
    """Drops training records that repeat or contain an evaluation prompt (alpaca_cot/dedup.py); returns the count."""
    keys = [dedup.prompt_key(e) for e in evaluation_items]
    kept, removed = dedup.decontaminate(list(train.items()), keys, near=False)
    return dict(kept), sum(removed.values())


def prepare(out: Path, sources: dict, config: dict) -> dict:
    """Writes data/<source>.json and eval/<task>.jsonl under out; returns the data manifest."""
    rng = random.Random(config["seed"])
    alpaca, _ = data.load_file(Path(sources["alpaca"]), skip_bad_records=True)
    belle, _ = data.load_file(Path(sources["belle"]), skip_bad_records=True)
    english, alpaca_pool = split_records(alpaca, config["english_eval"], rng)
    chinese, belle_pool = split_records(belle, config["chinese_eval"], rng)
    chinese = [dict(r, dataset="belle_heldout") for r in chinese]
    if sources.get("belle_eval"):
        extra = evaluation.load_items(sources["belle_eval"], "chinese")
        chinese += [{"instruction": i["instruction"], "input": i["input"], "output": i["gold"], "dataset": i["dataset"]}
                    for i in rng.sample(extra, min(config["belle_eval"], len(extra)))]
    rows, formatted = {}, {}
    templates = cot.load_templates()
    for name in cot.DATASETS:
        path = Path(sources["cot_src"]) / f"{name}_train.tsv"
        if path.is_file():
            rows[name] = cot.read_tsv(path, "clean")
            formatted[name] = cot.format_dataset(name, rows[name], templates, rng)
    if not rows:
        raise UserError(f"no FLAN CoT TSVs (<name>_train.tsv) in {sources['cot_src']}")
    cot_pool, cot_eval, repeats = cot.holdout(formatted, rows, config["cot_eval_per_dataset"], config["seed"])
    pools = {"alpaca": alpaca_pool, "belle": belle_pool, "cot": [r for rs in cot_pool.values() for r in rs]}
    pools, dropped = decontaminate(pools, english + chinese + cot_eval)
    train = {name: draw(pools[name], config["records_per_source"], name, rng) for name in SOURCES}
    leaks = decontaminate(train, english + chinese + cot_eval)[1]
    if leaks:  # cannot happen after the pools were cleaned; checked because a study that leaks measures nothing
        raise RuntimeError(f"{leaks} training records repeat an evaluation question")
    for name, records in train.items():
        write_json_atomic(records, out / "data" / f"{name}.json")
    for task, items in (("cot", cot_eval), ("chinese", chinese), ("english", english)):
        write_jsonl_atomic(items, out / "eval" / f"{task}.jsonl")
    manifest = {"train_records": {n: len(r) for n, r in train.items()},
                "eval_records": {"cot": len(cot_eval), "chinese": len(chinese), "english": len(english)},
                "cot_eval_per_dataset": {n: sum(r["dataset"] == n for r in cot_eval) for n in rows},
                "dropped_as_repeats_of_eval": dropped + repeats, "overlap_after_cleaning": leaks}
    write_json_atomic(manifest, out / "data" / "manifest.json")
    return manifest


def mix_files(out: Path, mix: str) -> str:
    return ",".join(str(out / "data" / f"{name}.json") for name in mix.split("-"))


def train_cell(out: Path, mix: str, base_model: str, config: dict) -> dict:
    """Trains one mix (resuming from its last checkpoint if a run was cut off); returns its summary."""
    import gc

    import torch

    from .train import finetune

    folder = out / "adapters" / mix
    resume = "auto" if any(folder.glob("checkpoint-*")) else None
    # No fused kernels: Liger patches LLaMA for the whole process, so every later evaluation in this process
    # would run other kernels than one after a restart.
    finetune(base_model=base_model, data=mix_files(out, mix), output_dir=str(folder), overwrite=resume is None,
             resume_from_checkpoint=resume, report_to="none", fused_kernels=False, **config["training"])
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return json.loads((folder / "train_summary.json").read_text())


def eval_cell(out: Path, model: str, base_model: str, config: dict) -> dict:
    items = [i for task in evaluation.TASKS for i in evaluation.load_items(out / "eval" / f"{task}.jsonl", task)]
    adapter = None if model == "base" else str(out / "adapters" / model)
    return evaluation.evaluate(base_model, adapter, items, out / "results" / model, model,
                               config["eval_batch_size"], config["max_new_tokens"], config["training"]["quantization"])


def cells(mixes) -> list[tuple[str, str]]:
    return [("train", m) for m in mixes] + [("evaluate", m) for m in ("base", *mixes)]


def done(out: Path, step: str, model: str) -> bool:
    if step == "train":
        return (out / "adapters" / model / "train_summary.json").is_file()
    return (out / "results" / model / "summary.json").is_file()


def environment(base_model_path: str) -> dict:
    """The machine and versions that run the cells, recorded for the report."""
    import platform

    import peft
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": commit or "unknown", "versions": f"python {platform.python_version()}, torch {torch.__version__}, transformers "
                        f"{transformers.__version__}, peft {peft.__version__}",
            "device": device, "base_model_path": base_model_path}


def run_cells(out: Path, base_model: str, config: dict, log=print):
    """Every train and evaluate cell not yet done, in order, timing each into out/timings.json."""
    from tqdm import tqdm

    if not all(done(out, step, model) for step, model in cells(config["mixes"])):
        write_json_atomic(environment(base_model), out / "environment.json")
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    todo = cells(config["mixes"])
    bar = tqdm(todo, desc="study", unit="cell")
    for step, model in bar:
        name = f"{step} {model}"
        if done(out, step, model):
            log(f"skip {name}: done")
            continue
        bar.set_postfix_str(name)
        log(f"== {name}")
        started = time.time()
        (train_cell if step == "train" else eval_cell)(out, model, base_model, config)
        timings[name] = round(time.time() - started, 1)
        write_json_atomic(timings, timings_path)
