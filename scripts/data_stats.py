"""Token-length statistics of training data, per source file and in total.

    python scripts/data_stats.py --data alpaca-belle-cot [--base_model PATH_OR_ID | --size 7]
        [--cutoff_len 512] [--prompt_template_name alpaca] [--skip_bad_records] [--json OUT] [--num_proc N]

Records, tokenizer and prompt go through the same code as finetune.py, so the lengths
(BOS and EOS included) are those training sees. Columns: records; no_input% (records whose input is
empty); len_p50/p90/p99/max (percentiles and maximum of a record's tokens); over_cutoff and
over_cutoff% (records longer than --cutoff_len, which training cuts); prompt_mean and response_mean
(mean tokens of the prompt with BOS, and of the response with EOS).
"""

import sys
import time

from alpaca_cot.data import catalog

from alpaca_cot import outputs
from alpaca_cot.data import loader as data_registry
from alpaca_cot.cli import UserError, run
from alpaca_cot.io import write_json_atomic
from alpaca_cot.data.preprocess import Prompter
from alpaca_cot.data.stats import length_stats

# The --json file: a few hundred bytes a source.
JSON_BYTES = 1 << 20

HEADER = (f"{'source':24s} {'records':>8s} {'no_input%':>9s} {'len_p50':>7s} {'len_p90':>7s} {'len_p99':>7s} "
          f"{'len_max':>7s} {'over_cutoff':>11s} {'over_cutoff%':>12s} {'prompt_mean':>11s} {'response_mean':>13s}")


def row(name: str, s: dict) -> str:
    return (f"{name[:24]:24s} {s['records']:8d} {100 * s['empty_input_share']:9.1f} {s['p50']:7d} {s['p90']:7d} "
            f"{s['p99']:7d} {s['max']:7d} {s['over_cutoff']:11d} {s['over_cutoff_pct']:12.2f} "
            f"{s['prompt_mean']:11.1f} {s['response_mean']:13.1f}")


def main(data="cot", base_model=None, size=7, cutoff_len=512, prompt_template_name="alpaca",
         skip_bad_records=False, json=None, num_proc=None, overwrite=False):
    """Print token-length statistics of --data under the prompt template, per source and in total.

    Args:
        data: dataset names joined by - (alpaca-belle-cot), or .json/.jsonl files, comma-separated.
        base_model: local folder or hub id whose tokenizer counts the tokens; wins over --size.
        size: LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b's tokenizer.
        cutoff_len: the finetune.py --cutoff_len to count the records over.
        prompt_template_name: a template in templates/ (alpaca).
        skip_bad_records: skip and count malformed records instead of stopping.
        json: also write the statistics to this JSON file.
        num_proc: processes that tokenise (default: one).
        overwrite: replace an existing --json file (a JSON file only).
    """
    from alpaca_cot.model import models

    start = time.perf_counter()
    if not isinstance(cutoff_len, int) or isinstance(cutoff_len, bool) or cutoff_len <= 0:
        raise UserError(f"--cutoff_len must be a positive integer, got {cutoff_len!r}")
    prompter = Prompter(prompt_template_name)
    if json is not None:  # the output rule (alpaca_cot/outputs.py): never a data file, --overwrite to replace
        outputs.check_outputs([outputs.Output(json, "--json", "json", JSON_BYTES)],
                         [("--data", p) for p in catalog.resolve(data)], overwrite)
    columns = data_registry.load(data, skip_bad_records, log=lambda m: print(m, file=sys.stderr))
    tokenizer = models.load_tokenizer(models.base_model_name(size, base_model))
    stats = length_stats(columns, tokenizer, prompter.bind(tokenizer), cutoff_len, num_proc)

    print(f"tokens per record (BOS + prompt + response + EOS) under template {prompter.name}; "
          f"over_cutoff: longer than cutoff_len {cutoff_len}")
    print(HEADER)
    for name, s in stats["sources"].items():
        print(row(name, s))
    print(row("total", stats["total"]))
    if json is not None:
        write_json_atomic(dict(data=str(data), base_model=tokenizer.name_or_path, template=prompter.name,
                               cutoff_len=cutoff_len, **stats), json)
    print(f"{stats['total']['records']} records in {time.perf_counter() - start:.1f}s"
          + (f" -> {json}" if json is not None else ""))


if __name__ == "__main__":
    run(main)
