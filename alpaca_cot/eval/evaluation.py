"""Evaluation: held-out sets in, per-record predictions and a summary out.

Three kinds of item, each a record of an evaluation file:
- cot: FLAN CoT questions with a gold answer (`format_cot.py --holdout` writes them); each is asked
  twice, without and with the CoT trigger, and scored by answer accuracy (reading.extract);
- chinese: Chinese instructions (BELLE records, or Belle-eval's question/std_answer/class), scored by
  the share of non-empty answers written in Chinese and, where the reference has a number, by
  agreement of the final number;
- english: Alpaca records, scored by the share of answers in English, their length and ROUGE-L.
Every score is computed by `score_row` from the row alone, so re-scoring a predictions file gives
the same summary without a model.
"""

import json
from pathlib import Path

from alpaca_cot.eval import reading, scoring
from alpaca_cot.cli import UserError
from alpaca_cot.data.loader import parse
from alpaca_cot.eval.predictions import TASKS, check_prediction



def _field(path, place, raw, *names) -> str:
    for name in names:
        value = raw.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise UserError(f"{path}: {place}: field '{names[0]}' is missing or empty")


def load_items(path, task: str, limit: int | None = None) -> list[dict]:
    """The evaluation records of one file as items {task, dataset, instruction, input, gold}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"evaluation file {path} not found")
    items = []
    for place, raw in parse(path):
        if not isinstance(raw, dict):
            raise UserError(f"{path}: {place}: expected an object, got {type(raw).__name__}")
        item = {"task": task, "instruction": _field(path, place, raw, "instruction", "question"),
                "input": raw.get("input") or ""}
        if task == "cot":
            item["dataset"] = _field(path, place, raw, "dataset")
            item["gold"] = _field(path, place, raw, "answer")
            if reading.gold(item["gold"], item["dataset"], item["instruction"]) is None:
                raise UserError(f"{path}: {place}: field 'answer' {item['gold']!r} is not a "
                                f"{reading.KINDS.get(item['dataset'], 'number')} answer")
        else:
            item["dataset"] = str(raw.get("dataset") or raw.get("class") or path.stem).replace("\u00a0", " ")
            # Open-ended Chinese items (Belle-eval's brainstorming, say) have no reference: only ROUGE needs one.
            item["gold"] = (_field(path, place, raw, "output", "std_answer", "reference") if task == "english"
                            else next((raw[k] for k in ("output", "std_answer", "reference")
                                       if isinstance(raw.get(k), str)), ""))
        items.append(item)
    if not items:
        raise UserError(f"{path}: no evaluation records")
    return items[:limit] if limit else items


def expand(items: list[dict]) -> list[dict]:
    """CoT questions are asked without and with the CoT trigger; the rest once, without it."""
    rows = []
    for i, item in enumerate(items):
        for trigger in ((False, True) if item["task"] == "cot" else (False,)):
            rows.append(dict(item, id=f"{item['task']}-{i}", cot_trigger=trigger))
    return rows


def score_row(row: dict) -> dict:
    """The row with its scores (re)computed from output and gold alone."""
    out, task = row["output"], row["task"]
    row = {k: v for k, v in row.items() if k not in ("extracted", "method", "correct", "chinese", "english",
                                                       "words", "rouge_l", "final_number_match")}
    if task == "cot":
        got, method = reading.extract(out, row["dataset"], row["instruction"], row.get("finished", True))
        row.update(extracted=got, method=method,
                   correct=got is not None and got == reading.gold(row["gold"], row["dataset"], row["instruction"]))
    elif task == "chinese":
        want = scoring.final_number(row["gold"])
        row.update(chinese=bool(out.strip()) and scoring.is_chinese(out),
                   final_number_match=None if want is None else scoring.final_number(out) == want)
    else:
        row.update(english=scoring.is_english(out), words=len(out.split()),
                   rouge_l=round(scoring.rouge_l(row["gold"], out), 4))
    return row


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def summarize(rows: list[dict]) -> dict:
    """Scores per task; CoT accuracy per dataset and overall (all questions pooled), trigger off and on."""
    summary = {}
    cot = [r for r in rows if r["task"] == "cot"]
    if cot:
        summary["cot"] = {}
        for trigger, key in ((False, "no_trigger"), (True, "trigger")):
            part = [r for r in cot if r["cot_trigger"] == trigger]
            per = {d: _mean(r["correct"] for r in part if r["dataset"] == d)
                   for d in sorted({r["dataset"] for r in part})}
            answered = [r for r in part if r["extracted"] is not None]
            summary["cot"][key] = {"accuracy": _mean(r["correct"] for r in part), "n": len(part),
                                   "answer_found": _mean(r["extracted"] is not None for r in part),
                                   "flan_phrase": _mean(r["method"] == "phrase" for r in part),
                                   "accuracy_when_found": _mean(r["correct"] for r in answered), "per_dataset": per}
    zh = [r for r in rows if r["task"] == "chinese"]
    if zh:
        with_number = [r for r in zh if r["final_number_match"] is not None]
        summary["chinese"] = {"n": len(zh), "chinese_share": _mean(r["chinese"] for r in zh),
                              "empty_share": _mean(not r["output"].strip() for r in zh),
                              "final_number_n": len(with_number),
                              "final_number_match": _mean(r["final_number_match"] for r in with_number)}
    en = [r for r in rows if r["task"] == "english"]
    if en:
        summary["english"] = {"n": len(en), "english_share": _mean(r["english"] for r in en),
                              "mean_words": _mean(r["words"] for r in en), "rouge_l": _mean(r["rouge_l"] for r in en)}
    return summary


def with_shots(items: list[dict], shots: dict) -> list[dict]:
    """CoT items with their dataset's few-shot exemplars (FLAN-formatted training records) as `context`,
    asked before the question; the question itself, which scoring reads the options from, is unchanged."""
    if not shots:
        return items
    blocks = {d: "\n\n".join(f"{r['instruction']}\n{r['output']}" for r in records) for d, records in shots.items()}
    return [dict(i, context=blocks[i["dataset"]]) if i["task"] == "cot" and i["dataset"] in blocks else i
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


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(summary: dict, title: str) -> str:
    """The summary as markdown tables (percentages)."""
    lines = [f"# {title}", ""]
    if "cot" in summary:
        datasets = list(summary["cot"]["no_trigger"]["per_dataset"])
        lines += ["FLAN CoT answer accuracy (%), without / with the CoT trigger:", "",
                  "| | " + " | ".join(datasets) + " | all |", "|---|" + "---:|" * (len(datasets) + 1)]
        for key in ("no_trigger", "trigger"):
            part = summary["cot"][key]
            cells = [percent(part["per_dataset"].get(d)) for d in datasets] + [percent(part["accuracy"])]
            lines.append(f"| {key.replace('_', ' ')} (n={part['n']}) | " + " | ".join(cells) + " |")
        lines.append("")
    if "chinese" in summary:
        s = summary["chinese"]
        lines += [f"Chinese (n={s['n']}): answers in Chinese {percent(s['chinese_share'])}%, empty "
                  f"{percent(s['empty_share'])}%, final number agrees {percent(s['final_number_match'])}% "
                  f"(of {s['final_number_n']} with a number)", ""]
    if "english" in summary:
        s = summary["english"]
        lines += [f"English (n={s['n']}): answers in English {percent(s['english_share'])}%, "
                  f"{s['mean_words']} words on average, ROUGE-L {percent(s['rouge_l'])}", ""]
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
