"""Evaluation: held-out sets in, per-record predictions and a summary out.

Every kind of item is a task of alpaca_cot/eval/tasks/ (cot: FLAN CoT questions asked without and with the
CoT trigger and scored by answer accuracy; chinese and english: instructions scored by language, final
number and ROUGE-L; one file per task). This module asks, scores and summarises them through that registry.
Every score is computed by `score_row` from the row alone, so re-scoring a predictions file gives
the same summary without a model.
"""

import json
from pathlib import Path

from alpaca_cot.cli import UserError
from alpaca_cot.data.loader import parse
from alpaca_cot.eval.predictions import check_prediction
from alpaca_cot.eval.tasks import TASKS, named

# Every task's score fields: a row is re-scored without any it holds.
SCORE_FIELDS = {f for task in TASKS.values() for f in task.scores}


def load_items(path, task: str, limit: int | None = None) -> list[dict]:
    """The evaluation records of one file as items {task, instruction, input, dataset, gold, ...}."""
    path = Path(path)
    kind = named(task, str(path))
    if not path.is_file():
        raise UserError(f"evaluation file {path} not found")
    items = []
    for place, raw in parse(path):
        if not isinstance(raw, dict):
            raise UserError(f"{path}: {place}: expected an object, got {type(raw).__name__}")
        items.append(kind.item(path, place, raw))
    if not items:
        raise UserError(f"{path}: no evaluation records")
    return items[:limit] if limit else items


def expand(items: list[dict]) -> list[dict]:
    """Each item as the rows its task asks it as (CoT questions without and with the CoT trigger; the rest once)."""
    return [row for i, item in enumerate(items) for row in TASKS[item["task"]].rows(item, i)]


def score_row(row: dict) -> dict:
    """The row with its scores (re)computed from output and gold alone."""
    row = {k: v for k, v in row.items() if k not in SCORE_FIELDS}
    row.update(TASKS[row["task"]].score(row))
    return row


def summarize(rows: list[dict]) -> dict:
    """Each task's scores, for the tasks with rows, in the registry's order."""
    by_task = {name: [r for r in rows if r["task"] == name] for name in TASKS}
    return {name: TASKS[name].summarize(part) for name, part in by_task.items() if part}


def with_shots(items: list[dict], shots: dict) -> list[dict]:
    """CoT items with their dataset's few-shot exemplars (FLAN-formatted training records) as `context`,
    asked before the question; the question itself, which scoring reads the options from, is unchanged."""
    if not shots:
        return items
    blocks = {d: "\n\n".join(f"{r['instruction']}\n{r['output']}" for r in records) for d, records in shots.items()}
    return [dict(i, context=blocks[i["dataset"]]) if TASKS[i["task"]].few_shot and i["dataset"] in blocks else i
            for i in items]


def generate_rows(generator, rows: list[dict], batch_size: int, decoding: dict, progress=None) -> list[dict]:
    """Answers every row, batching prompts of similar length (less padding), in the rows' order; each row
    records whether its answer ended by itself (`finished`) or at the token limit."""
    asked = [f"{r['context']}\n\n{r['instruction']}" if r.get("context") else r["instruction"] for r in rows]
    prompts = [generator.prompt(q, r["input"], r["cot_trigger"]) for q, r in zip(asked, rows)]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    outputs = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, answer in zip(chunk, generator.complete([prompts[i] for i in chunk], **decoding)):
            outputs[i] = answer
        if progress:
            progress.update(len(chunk))
    return [score_row(dict({k: v for k, v in r.items() if k != "context"}, prompt=p, output=o, finished=f,
                           output_tokens=n)) for r, p, (o, f, n) in zip(rows, prompts, outputs)]


def markdown(summary: dict, title: str) -> str:
    """The summary as markdown tables (percentages): each task's section, then lm-evaluation-harness's."""
    lines = [f"# {title}", ""]
    for name, task in TASKS.items():
        if name in summary:
            lines += task.markdown(summary[name])
    if "lm_eval" in summary:
        from alpaca_cot.eval.harness import markdown as harness_markdown

        lines += harness_markdown(summary["lm_eval"])
    return "\n".join(lines)


def read_predictions(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--predictions {path} not found")
    rows = []
    for place, raw in parse(path):
        if (why := check_prediction(raw)) is not None:
            raise UserError(f"{path}: {place}: {why}")
        raw.setdefault("cot_trigger", False)
        rows.append(raw)
    return rows


def predictions_file(out_dir) -> Path:
    """An evaluation's predictions: predictions.jsonl, or the study's compressed predictions.jsonl.gz."""
    plain = Path(out_dir) / "predictions.jsonl"
    return plain if plain.is_file() or not plain.with_suffix(".jsonl.gz").is_file() else plain.with_suffix(".jsonl.gz")


def write(rows: list[dict], summary: dict, out_dir, title: str, compress: bool = False):
    """predictions.jsonl (compress: predictions.jsonl.gz, replacing the plain one), summary.json and summary.md
    in out_dir, each written whole or not at all."""
    from alpaca_cot.io import write_jsonl_atomic, write_jsonl_gz_atomic

    out_dir = Path(out_dir)
    if compress:
        write_jsonl_gz_atomic(rows, out_dir / "predictions.jsonl.gz")
        (out_dir / "predictions.jsonl").unlink(missing_ok=True)
    else:
        write_jsonl_atomic(rows, out_dir / "predictions.jsonl")
    write_summary(summary, out_dir, title)


def write_summary(summary: dict, out_dir, title: str):
    """summary.json and summary.md in out_dir, each written whole or not at all."""
    from alpaca_cot.io import atomic_open

    with atomic_open(Path(out_dir) / "summary.json") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    with atomic_open(Path(out_dir) / "summary.md") as f:
        f.write(markdown(summary, title) + "\n")


def evaluate(base_model: str, lora_weights, items: list[dict], out_dir, title: str, batch_size: int = 32,
             max_new_tokens: int = 256, quantization: str = "none", prompt_template_name: str = "alpaca") -> dict:
    """Loads the model, answers every item greedily, writes the three files; returns the summary."""
    import gc

    import torch
    from tqdm import tqdm

    from alpaca_cot.infer.generation import Generator, decoding_kwargs

    decoding = decoding_kwargs(max_new_tokens)
    rows = expand(items)
    generator = Generator(base_model, lora_weights, quantization, prompt_template_name)
    with tqdm(total=len(rows), desc=f"evaluating {title}", unit="answer", mininterval=5) as bar:
        rows = generate_rows(generator, rows, batch_size, decoding, bar)
    del generator
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    summary = summarize(rows)
    write(rows, summary, out_dir, title)
    return summary
