"""Evaluates a base model, with or without a LoRA adapter, on held-out sets.

    python scripts/evaluate.py --base_model smollm2-135m [--lora_weights saved-cot7b] --out eval/cot \\
        [--cot_eval data/CoT_data_eval.jsonl] [--chinese_eval F] [--english_eval F] [--limit 100]
    python scripts/evaluate.py --base_model smollm2-135m --out eval/any --eval cot=F,english=G  # any registered task
    python scripts/evaluate.py --predictions eval/cot/predictions.jsonl     # re-score, no model
    python scripts/evaluate.py --base_model smollm2-135m --lora_weights saved-cot --out eval/std \\
        --lm_eval gsm8k,mmlu,ceval-valid,cmmlu                                  # lm-evaluation-harness

Writes predictions.jsonl (prompt, output, extracted answer, gold, correct, per record), summary.json
and summary.md into --out. Decoding is greedy. The tasks (how a record is asked and scored) are the files of
alpaca_cot/eval/tasks/; the scoring rules are in alpaca_cot/eval/scoring.py and reading.py.
"""

import json
from pathlib import Path

from alpaca_cot.eval import evaluation
from alpaca_cot.eval.tasks import TASKS, named

from alpaca_cot import outputs
from alpaca_cot.cli import UserError, run

# What --out receives (alpaca_cot/outputs.py's output rule: an existing one is replaced with --overwrite only).
OUT_FILES = {"predictions.jsonl": "jsonl", "summary.json": "json", "summary.md": "text"}


def eval_files(cot_eval, chinese_eval, english_eval, eval_spec) -> list[tuple[str, str, str]]:
    """(flag, task, file) of every evaluation file asked for: the three tasks' own flags, then --eval's
    name=FILE entries in their order; an unknown task or an entry without a file fails in one line."""
    files = [(f"--{task}_eval", task, path) for task, path in
             (("cot", cot_eval), ("chinese", chinese_eval), ("english", english_eval)) if path]
    for entry in [] if eval_spec is None else eval_spec.split(","):
        name, sep, path = entry.strip().partition("=")
        if not (name and sep and path.strip()):
            raise UserError(f"--eval expects name=FILE[,name=FILE...] (tasks: {', '.join(TASKS)}), got {entry!r}")
        named(name, "--eval")
        files.append((f"--eval {name}", name, path))
    return files


def main(base_model: str = None, lora_weights: str = None, out: str = None, cot_eval: str = None,
         chinese_eval: str = None, english_eval: str = None, eval: str = None, limit: int = None, batch_size: int = 32,
         max_new_tokens: int = 256, quantization: str = "none", prompt_template_name: str = "alpaca",
         predictions: str = None, overwrite: bool = False, lm_eval: str = None, lm_eval_include: str = None,
         lm_eval_fewshot: int = None):
    """Evaluate a model on FLAN CoT, Chinese and English held-out sets, or re-score predictions.

    Args:
        base_model: local folder, hub id, .gguf file or preset (smollm2-135m)
        lora_weights: adapter folder (default: none, the base model alone)
        out: folder for predictions.jsonl, summary.json and summary.md
        cot_eval: FLAN CoT held-out JSONL (format_cot.py --holdout writes one)
        chinese_eval: Chinese instructions (BELLE records, or Belle-eval question/std_answer)
        english_eval: English Alpaca records with reference outputs
        eval: files of any registered task (alpaca_cot/eval/tasks/), comma-separated name=FILE pairs
            (cot=F,english=G; the three flags above are cot=, chinese= and english=); an unknown name fails
        limit: use only the first N records of each file
        batch_size: prompts answered together
        max_new_tokens: the longest answer, in tokens
        quantization: none, 8bit or 4bit for the base model
        prompt_template_name: a template in templates/
        predictions: re-score this predictions.jsonl instead of generating (no model is loaded)
        overwrite: replace the files of an earlier evaluation in --out
        lm_eval: standard benchmarks through lm-evaluation-harness, comma-separated task names (gsm8k, mmlu,
            ceval-valid, cmmlu, ...; their data comes from the hub); the base with the adapter unmerged,
            results in summary.json and summary.md (--limit: samples per task; needs pip install lm-eval)
        lm_eval_include: a folder of task YAMLs of your own for --lm_eval (local data files work)
        lm_eval_fewshot: few-shot examples per --lm_eval question (default: each task's own)
    """
    if predictions is not None:
        if out is not None:
            size = 2 * Path(predictions).stat().st_size if Path(predictions).is_file() else 0
            outputs.check_outputs(outputs.files_in(out, "--out", OUT_FILES, size), [("--predictions", predictions)], overwrite)
        rows = [evaluation.score_row(r) for r in evaluation.read_predictions(predictions)]
        summary = evaluation.summarize(rows)
        if out is not None:
            evaluation.write(rows, summary, out, f"Re-scored {predictions}")
        print(evaluation.markdown(summary, f"Re-scored {predictions}"))
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return summary
    for flag, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("limit", limit)):
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    files = eval_files(cot_eval, chinese_eval, english_eval, eval)
    if not files and lm_eval is None:
        raise UserError("nothing to evaluate: pass --cot_eval, --chinese_eval, --english_eval, --eval and/or "
                        "--lm_eval (or --predictions)")
    if out is None:
        raise UserError("--out is required: the folder for predictions.jsonl and summary.json")
    if lm_eval is not None and (quantization != "none" or (lm_eval_fewshot is not None and lm_eval_fewshot < 0)):
        raise UserError("--lm_eval runs the base in 16/32-bit (--quantization none) with --lm_eval_fewshot >= 0")
    from alpaca_cot.eval import harness
    from alpaca_cot.model import models

    tasks = harness.task_manager(lm_eval, lm_eval_include) if lm_eval is not None else None

    name = models.base_model_name(base_model=base_model) if base_model else models.base_model_name()
    outputs.check_outputs(outputs.files_in(out, "--out", OUT_FILES), [
        *((flag, path) for flag, _, path in files), ("--lora_weights", lora_weights),
        ("--base_model", name if Path(name).exists() else None)], overwrite)
    items = [item for _, task, path in files for item in evaluation.load_items(path, task, limit)]
    outputs.check_space(outputs.files_in(out, "--out", OUT_FILES, outputs.answers_bytes(items, max_new_tokens, 2)))
    title = f"{base_model or name}" + (f" + {lora_weights}" if lora_weights else "")
    summary = evaluation.evaluate(name, lora_weights, items, out, title, batch_size, max_new_tokens, quantization,
                                  prompt_template_name) if items else {}
    if tasks is not None:
        from alpaca_cot.model.adapters import check_adapter_source, tuned_model

        base, adapter = tuned_model(lora_weights, name)  # a fully tuned model's folder is the base
        if adapter is not None:
            check_adapter_source(adapter)
        summary["lm_eval"] = harness.evaluate(base, adapter, tasks[1], tasks[0], limit, lm_eval_fewshot, batch_size)
        evaluation.write_summary(summary, out, title)
    print(evaluation.markdown(summary, title))
    return summary


if __name__ == "__main__":
    run(main)
