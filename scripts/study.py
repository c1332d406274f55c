"""Runs the Alpaca-CoT ablation study in one command and writes report.md.

    python scripts/study.py --base_model smollm2-135m --out study/smollm2 \\
        --alpaca data/alpaca_data_cleaned.json --belle data/belle_data_cn.json --cot_src data/flan_cot \\
        [--belle_eval eval_set.json] [--seeds 1,2,3] [--workers 4]

Trains alpaca, alpaca-cot, alpaca-belle and alpaca-belle-cot with the same hyperparameters, once per
training seed, evaluates them and the untuned base on the same held-out records (drawn with
--eval_seed), and writes report.md, summary.json, figures and per-record predictions under --out.
Run it again to continue a study that was stopped: finished cells are skipped. See alpaca_cot/study/grid.py.
"""

import json
import shlex
import sys
from pathlib import Path

from alpaca_cot import DATA_DIR, outputs

from alpaca_cot.data import catalog

from alpaca_cot.study import report, grid, runner
from alpaca_cot.cli import UserError, as_list, run
from alpaca_cot.io import write_json_atomic


# How a study was run, not what it measures: continuing with other values is the same grid.
RUN_ONLY = ("command", "workers")


def check_config(out: Path, config: dict) -> bool:
    """A study folder belongs to one configuration: continuing it with other settings would mix runs.
    Returns whether the folder has none yet (config.json is written once the data is prepared)."""
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(config) if k not in RUN_ONLY and old.get(k) != config.get(k))
        if changed:
            raise UserError(f"{out} holds a study with other settings ({', '.join(changed)}); use another --out")
        return False  # the first command stays on record
    return True


def main(base_model: str = "smollm2-135m", out: str = "study/run", alpaca: str = None, belle: str = None,
         cot_src: str = None, belle_eval: str = None, records_per_source: int = 600, cot_eval_per_dataset: int = 200,
         chinese_eval: int = 100, belle_eval_records: int = 100, english_eval: int = 100,
         mixes: str = ",".join(grid.MIXES), num_epochs: float = 3, batch_size: int = 16, micro_batch_size: int = 16,
         learning_rate: float = 5e-4, warmup_steps: int = 10, cutoff_len: int = 512, lora_r: int = 16,
         lora_alpha: int = 32, lora_dropout: float = 0.05,
         lora_target_modules: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
         quantization: str = "none", max_new_tokens: int = 256, eval_batch_size: int = 64, seeds: str = "1,2,3",
         eval_seed: int = 0, shots: int = 0, workers: int = 1):
    """Run (or continue) the ablation grid and write the report.

    Args:
        base_model: local folder, hub id, .gguf file or preset (smollm2-135m)
        out: the study folder (data, adapters, results, report.md)
        alpaca: English Alpaca records (default: the registry's alpaca file)
        belle: Chinese BELLE records (default: the registry's belle file)
        cot_src: folder of FLAN CoT <name>_train.tsv files (default: data/flan_cot)
        belle_eval: Belle-eval eval_set.json, added to the Chinese held-out set (optional)
        records_per_source: training records drawn from each source
        cot_eval_per_dataset: FLAN CoT questions held out per dataset
        chinese_eval: BELLE records held out for evaluation
        belle_eval_records: Belle-eval records drawn into the Chinese set
        english_eval: Alpaca records held out for evaluation
        mixes: the data mixes to train, comma-separated
        num_epochs: training epochs for every mix
        batch_size: records per optimizer step
        micro_batch_size: records per forward pass
        learning_rate: peak learning rate
        warmup_steps: linear warm-up steps
        cutoff_len: longest training sequence, in tokens
        lora_r: LoRA rank
        lora_alpha: LoRA alpha
        lora_dropout: LoRA dropout
        lora_target_modules: the modules LoRA adapts, comma-separated
        quantization: none, 8bit or 4bit
        max_new_tokens: the longest evaluated answer, in tokens
        eval_batch_size: prompts answered together
        seeds: training seeds, comma-separated: each mix is trained once per seed, on its own draw of
            training records (the evaluation sets stay the same)
        eval_seed: seeds the draw of the held-out evaluation sets (and of --shots exemplars)
        shots: few-shot evaluation: this many FLAN-formatted exemplars from each dataset's training rows
            (never evaluation rows) before every FLAN CoT question (0: zero-shot)
        workers: cells run at once, each in its own process (a GPU holds several small models); 1: in this one
    """
    from alpaca_cot.model import models

    for flag, value in (("records_per_source", records_per_source), ("cot_eval_per_dataset", cot_eval_per_dataset),
                        ("chinese_eval", chinese_eval), ("english_eval", english_eval),
                        ("belle_eval_records", belle_eval_records), ("eval_batch_size", eval_batch_size),
                        ("max_new_tokens", max_new_tokens), ("workers", workers)):
        if value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    if shots < 0:
        raise UserError(f"--shots must be at least 0, got {shots}")
    given = as_list(seeds)
    seeds = [int(s) for s in given if s.lstrip("-").isdigit()]
    if not seeds or len(seeds) < len(given) or len(set(seeds)) < len(seeds):
        raise UserError(f"--seeds must be distinct integers, comma-separated, got {','.join(given)}")
    mixes = as_list(mixes)
    unknown = [m for m in mixes if any(s not in grid.SOURCES for s in m.split("-"))]
    if unknown or not mixes:
        raise UserError(f"--mixes: unknown mix {unknown or mixes}; mixes join {', '.join(grid.SOURCES)} with '-'")
    sources = {"alpaca": alpaca or str(DATA_DIR / catalog.REGISTRY["alpaca"].file),
               "belle": belle or str(DATA_DIR / catalog.REGISTRY["belle"].file),
               "cot_src": cot_src or str(DATA_DIR / "flan_cot"), "belle_eval": belle_eval}
    for name, path in sources.items():
        if path and not Path(path).exists():
            raise UserError(f"--{name} {path} not found")
    training = dict(quantization=quantization, num_epochs=num_epochs, batch_size=batch_size,
                    micro_batch_size=micro_batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
                    cutoff_len=cutoff_len, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                    lora_target_modules=",".join(as_list(lora_target_modules)), val_set_size=0, save_steps=50,
                    logging_steps=10)
    config = dict(base_model=base_model, sources=sources, records_per_source=records_per_source,
                  cot_eval_per_dataset=cot_eval_per_dataset, chinese_eval=chinese_eval, belle_eval=belle_eval_records,
                  english_eval=english_eval, mixes=mixes, training=training, max_new_tokens=max_new_tokens,
                  eval_batch_size=eval_batch_size, seeds=seeds, eval_seed=eval_seed, shots=shots, workers=workers,
                  command="python " + " ".join(shlex.quote(a) for a in sys.argv))
    out = Path(out)
    base_path = models.base_model_name(base_model=base_model)  # every input is checked before anything is written
    # The output rule (alpaca_cot/outputs.py); each training cell checks the room for its adapter when it is built.
    answers = (2 * 9 * cot_eval_per_dataset + chinese_eval + belle_eval_records + english_eval) * \
        (len(mixes) * len(seeds) + 1)
    size = outputs.estimate_bytes(4 * records_per_source * len(seeds) + answers, answers, max_new_tokens)
    outputs.check_outputs([outputs.Output(out, "--out", "folder", size, ("config.json", "data/manifest.json"), "continue")],
                     [*((f"--{name}", path) for name, path in sources.items()),
                      ("--base_model", base_path if Path(base_path).exists() else None)], what="a study folder")
    new = check_config(out, config)
    manifest_path = out / "data" / "manifest.json"
    # Prepared again unless config.json, written after the data, says the data in the folder is this study's.
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() and not new else \
        grid.prepare(out, sources, config)
    if new:
        write_json_atomic(config, out / "config.json")
    print(f"data: {json.dumps(manifest, ensure_ascii=False)}")
    runner.run_cells(out, base_path, config, workers)
    report.write_report(out, config, manifest)
    print(f"wrote {out / 'report.md'}")


if __name__ == "__main__":
    run(main)
