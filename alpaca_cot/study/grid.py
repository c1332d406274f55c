"""The ablation study of Alpaca-CoT: what CoT data, Chinese data and a CoT prompt do to a model.

One run (scripts/study.py) does four steps, each skipped when its output already exists, so a
killed study continues where it stopped:
1. prepare: hold evaluation records out of every source (drawn with --eval_seed, the same for every
   training seed), then for each training seed draw the same number of training records from each
   source; drop any training record that repeats an evaluation question, and check that none is left;
   with --shots, draw each FLAN dataset's exemplars from its training rows, never from evaluation rows;
2. train: one LoRA adapter per mix and seed (alpaca, alpaca-cot, alpaca-belle, alpaca-belle-cot), all
   with the same hyperparameters;
3. evaluate: the untuned base and every adapter on the same held-out sets, FLAN CoT questions
   without and with the CoT trigger;
4. report: report.md with tables, figures and answers side by side (alpaca_cot/study/report.py).
This module prepares the data and names the cells; alpaca_cot/study/runner.py runs them.
"""

import random
from pathlib import Path

from alpaca_cot.eval import chance, evaluation

from alpaca_cot.data import cot, loader, dedup
from alpaca_cot.cli import UserError
from alpaca_cot.io import write_json_atomic, write_jsonl_atomic

MIXES = ("alpaca", "alpaca-cot", "alpaca-belle", "alpaca-belle-cot")
SOURCES = ("alpaca", "belle", "cot")
# The registered evaluation tasks (alpaca_cot/eval/tasks/) the study holds out sets for, in this order.
EVAL_TASKS = ("cot", "chinese", "english")


def key(record: dict) -> str:
    """cot.question_key of instruction and input (the held-out draw samples these keys, sorted)."""
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
    """Drops training records that repeat or contain an evaluation prompt (alpaca_cot/data/dedup.py); returns the count."""
    keys = [dedup.prompt_key(e) for e in evaluation_items]
    kept, removed = dedup.decontaminate(list(train.items()), keys, near=False)
    return dict(kept), sum(removed.values())


def held_out(sources: dict, config: dict) -> dict:
    """sets: the evaluation sets {task: items}; pools: the training records {source: records} with every
    evaluation question removed; cot_pool: those FLAN records by dataset (few-shot exemplars come from them);
    train_rows: the FLAN TSV rows left for training (the majority baseline); dropped: records removed."""
    rng = random.Random(config["eval_seed"])
    alpaca, _ = loader.load_file(Path(sources["alpaca"]), skip_bad_records=True)
    belle, _ = loader.load_file(Path(sources["belle"]), skip_bad_records=True)
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
    cot_pool, cot_eval, repeats = cot.holdout(formatted, rows, config["cot_eval_per_dataset"], config["eval_seed"])
    held = {cot.question_key(i["instruction"]) for i in cot_eval}
    pools = {"alpaca": alpaca_pool, "belle": belle_pool, "cot": [r for rs in cot_pool.values() for r in rs]}
    pools, dropped = decontaminate(pools, english + chinese + cot_eval)
    kept = {id(r) for r in pools["cot"]}
    return {"sets": dict(zip(EVAL_TASKS, (cot_eval, chinese, english))), "pools": pools,
            "cot_pool": {n: [r for r in rs if id(r) in kept] for n, rs in cot_pool.items()},
            "train_rows": {n: [r for r in rs if cot.question_key(r[0]) not in held] for n, rs in rows.items()},
            "dropped": dropped + repeats}


def exemplars(pool_by_dataset: dict, shots: int, seed: int) -> dict:
    """{dataset: k FLAN-formatted training records} for few-shot prompts, drawn with seed."""
    return {name: random.Random(f"{seed}:shots:{name}").sample(records, min(shots, len(records)))
            for name, records in sorted(pool_by_dataset.items())}


def prepare(out: Path, sources: dict, config: dict) -> dict:
    """Writes eval/<task>.jsonl, data/seed-<s>/<source>.json (and eval/shots.json) under out; returns the manifest."""
    split = held_out(sources, config)
    sets, pools = split["sets"], split["pools"]
    every_eval = [i for items in sets.values() for i in items]
    shots = exemplars(split["cot_pool"], config["shots"], config["eval_seed"]) if config["shots"] else {}
    if decontaminate({"shots": [r for rs in shots.values() for r in rs]}, every_eval)[1]:
        raise RuntimeError("a few-shot exemplar repeats an evaluation question")
    train_records = {}
    for seed in config["seeds"]:
        train = {name: draw(pools[name], config["records_per_source"], name, random.Random(f"{seed}:{name}"))
                 for name in SOURCES}
        if decontaminate(train, every_eval)[1]:  # cannot happen after the pools were cleaned; a leak measures nothing
            raise RuntimeError(f"seed {seed}: training records repeat an evaluation question")
        for name, records in train.items():
            write_json_atomic(records, out / "data" / f"seed-{seed}" / f"{name}.json")
        train_records[f"seed-{seed}"] = {n: len(r) for n, r in train.items()}
    for task, items in sets.items():
        write_jsonl_atomic(items, out / "eval" / f"{task}.jsonl")
    if shots:
        write_json_atomic(shots, out / "eval" / "shots.json")
    majority = chance.majority_answers(split["train_rows"])
    manifest = {"train_records": train_records, "eval_records": {t: len(items) for t, items in sets.items()},
                "cot_eval_per_dataset": {n: sum(r["dataset"] == n for r in sets["cot"]) for n in split["train_rows"]},
                "dropped_as_repeats_of_eval": split["dropped"], "overlap_after_cleaning": 0,
                "shots": {n: len(r) for n, r in shots.items()},
                "chance": chance.baselines(evaluation.load_items(out / "eval" / "cot.jsonl", "cot"), majority)}
    manifest["chance"]["majority_answers"] = majority
    write_json_atomic(manifest, out / "data" / "manifest.json")
    return manifest


def model_name(mix: str, seed) -> str:
    return "base" if mix == "base" else f"{mix}/seed-{seed}"


def models(config: dict) -> list[str]:
    return ["base"] + [model_name(m, s) for m in config["mixes"] for s in config["seeds"]]


def cells(config: dict) -> list[tuple[str, str, int | None]]:
    trains = [("train", m, s) for m in config["mixes"] for s in config["seeds"]]
    return trains + [("evaluate", "base", None)] + [("evaluate", m, s) for _, m, s in trains]


def done(out: Path, step: str, mix: str, seed) -> bool:
    if step == "train":
        return (out / "adapters" / model_name(mix, seed) / "train_summary.json").is_file()
    return (out / "results" / model_name(mix, seed) / "summary.json").is_file()
