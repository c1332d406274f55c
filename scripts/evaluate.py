"""Evaluates a base model, with or without a LoRA adapter, on held-out sets.

    python scripts/evaluate.py --base_model smollm2-135m [--lora_weights saved-cot7b] --out eval/cot \\
        [--cot_eval data/CoT_data_eval.jsonl] [--chinese_eval F] [--english_eval F] [--limit 100]
    python scripts/evaluate.py --predictions eval/cot/predictions.jsonl     # re-score, no model

Writes predictions.jsonl (prompt, output, extracted answer, gold, correct, per record), summary.json
and summary.md into --out. Decoding is greedy. The scoring rules are in alpaca_cot/scoring.py.
"""

import json
from pathlib import Path

from alpaca_cot import evaluation, outputs
from alpaca_cot.cli import UserError, run

# What --out receives (alpaca_cot/outputs.py's output rule: an existing one is replaced with --overwrite only).
OUT_FILES = {"predictions.jsonl": "jsonl", "summary.json": "json", "summary.md": "text"}


def main(base_model: str = None, lora_weights: str = None, out: str = None, cot_eval: str = None,
         chinese_eval: str = None, english_eval: str = None, limit: int = None, batch_size: int = 32,
         max_new_tokens: int = 256, quantization: str = "none", prompt_template_name: str = "alpaca",
         predictions: str = None, overwrite: bool = False):
    """Evaluate a model on FLAN CoT, Chinese and English held-out sets, or re-score predictions.

    Args:
        base_model: local folder, hub id, .gguf file or preset (smollm2-135m)
        lora_weights: adapter folder (default: none, the base model alone)
        out: folder for predictions.jsonl, summary.json and summary.md
        cot_eval: FLAN CoT held-out JSONL (format_cot.py --holdout writes one)
        chinese_eval: Chinese instructions (BELLE records, or Belle-eval question/std_answer)
        english_eval: English Alpaca records with reference outputs
        limit: use only the first N records of each file
        batch_size: prompts answered together
        max_new_tokens: the longest answer, in tokens
        quantization: none, 8bit or 4bit for the base model
        prompt_template_name: a template in templates/
        predictions: re-score this predictions.jsonl instead of generating (no model is loaded)
        overwrite: replace the files of an earlier evaluation in --out
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
    files = {"cot": cot_eval, "chinese": chinese_eval, "english": english_eval}
    if not any(files.values()):
        raise UserError("nothing to evaluate: pass --cot_eval, --chinese_eval and/or --english_eval (or --predictions)")
    if out is None:
        raise UserError("--out is required: the folder for predictions.jsonl and summary.json")
    from alpaca_cot import models

    name = models.base_model_name(base_model=base_model) if base_model else models.base_model_name()
    outputs.check_outputs(outputs.files_in(out, "--out", OUT_FILES), [
        *((f"--{task}_eval", path) for task, path in files.items()), ("--lora_weights", lora_weights),
        ("--base_model", name if Path(name).exists() else None)], overwrite)
    items = [item for task, path in files.items() if path for item in evaluation.load_items(path, task, limit)]
    outputs.check_space(outputs.files_in(out, "--out", OUT_FILES, outputs.answers_bytes(items, max_new_tokens, 2)))
    title = f"{base_model or name}" + (f" + {lora_weights}" if lora_weights else "")
    summary = evaluation.evaluate(name, lora_weights, items, out, title, batch_size, max_new_tokens, quantization,
                                  prompt_template_name)
    print(evaluation.markdown(summary, title))
    return summary


if __name__ == "__main__":
    run(main)
