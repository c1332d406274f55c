"""Token-length statistics of instruction data, measured exactly as training tokenises it.

Lengths come from `preprocess.encode_records` (encode_batch, and earlier turns where a record has
them) with the cut switched off: BOS + prompt + response + EOS, so `over_cutoff` counts the records
that finetune.py would truncate.
"""

import sys

import numpy as np

from alpaca_cot.data.preprocess import IGNORE, encode_records, map_fingerprint

NO_CUT = sys.maxsize


def _measure(batch, tokenizer, prompter):
    out = encode_records(batch, tokenizer, prompter, NO_CUT)
    # The prompt (BOS included) is exactly the -100 part of the labels.
    return {"length": out["length"], "prompt": [labels.count(IGNORE) for labels in out["labels"]],
            "empty_input": [not x for x in batch["input"]]}


def _summary(length, prompt, empty_input, cutoff_len) -> dict:
    p50, p90, p99 = (int(v) for v in np.percentile(length, [50, 90, 99], method="inverted_cdf"))
    over = int((length > cutoff_len).sum())
    return {"records": int(length.size), "empty_input_share": round(float(empty_input.mean()), 4),
            "p50": p50, "p90": p90, "p99": p99, "max": int(length.max()),
            "over_cutoff": over, "over_cutoff_pct": round(100 * over / length.size, 2),
            # finetune.py drops these: nothing of the response survives the cut.
            "prompt_too_long": int((prompt >= cutoff_len - 1).sum()),
            "prompt_mean": round(float(prompt.mean()), 1),
            "response_mean": round(float((length - prompt).mean()), 1)}


def length_stats(columns: dict, tokenizer, prompter, cutoff_len: int, num_proc: int | None = None) -> dict:
    """{"sources": {stem: summary}, "total": summary}; the response part includes the EOS.

    Tokenising dominates the time, mostly Python around the tokenizer; num_proc > 1 spreads it over processes.
    """
    from datasets import Dataset

    records = Dataset.from_dict(columns)
    measured = records.map(
        _measure, batched=True, batch_size=1000, remove_columns=list(columns), desc="tokenising", num_proc=num_proc,
        fn_kwargs=dict(tokenizer=tokenizer, prompter=prompter),
        new_fingerprint=map_fingerprint(records, tokenizer, prompter, "length_stats")).with_format("numpy")
    length, prompt, empty = measured["length"][:], measured["prompt"][:], measured["empty_input"][:]
    source = np.asarray(columns["source"])
    sources = {}
    for name in dict.fromkeys(columns["source"]):
        mask = source == name
        sources[name] = _summary(length[mask], prompt[mask], empty[mask], cutoff_len)
    return {"sources": sources, "total": _summary(length, prompt, empty, cutoff_len)}
