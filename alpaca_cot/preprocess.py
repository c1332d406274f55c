"""Records -> training features: one tokenisation per record, prompt masked out of the loss.

Each record becomes `<s> prompt response </s>`, tokenised in one pass; the prompt's tokens
are found from the character offsets, so the ids are exactly those that generation sees.
Labels are -100 on the prompt (unless train_on_inputs) and the ids elsewhere. EOS ends a record
only when the whole record fits in cutoff_len (as alpaca-lora does): a record cut at cutoff_len
ends without it, so that the model never learns to stop mid-sentence.
"""

from bisect import bisect_left

IGNORE = -100


def _bos(tokenizer) -> list[int]:
    """BOS exactly when the tokenizer itself adds one: LLaMA's does; SmolLM2's, whose bos_token is
    the chat marker <|im_start|>, does not; nor does one whose BOS is its EOS."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == tokenizer.eos_token_id:
        return []
    return [bos] if tokenizer("a")["input_ids"][:1] == [bos] else []


def encode_batch(batch: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool = False) -> dict:
    """For datasets.map(batched=True): adds input_ids, labels, length, truncated, prompt_too_long."""
    prompts = [prompter.prompt(i, x) for i, x in zip(batch["instruction"], batch["input"])]
    texts = [p + o for p, o in zip(prompts, batch["output"])]
    # split_special_tokens: a literal "</s>" in user text is text, not the EOS id.
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    bos = _bos(tokenizer)
    eos = tokenizer.eos_token_id
    out = {"input_ids": [], "labels": [], "length": [], "truncated": [], "prompt_too_long": []}
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        n_prompt = len(bos) + bisect_left(offsets, len(prompt), key=lambda span: span[0])
        ids = bos + ids
        truncated = len(ids) + 1 > cutoff_len
        ids = ids[:cutoff_len] if truncated else ids + [eos]
        labels = list(ids) if train_on_inputs else ([IGNORE] * n_prompt + ids[n_prompt:])[: len(ids)]
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["truncated"].append(truncated)
        # Nothing of the response survives the cut: unless the prompt is learned too, nothing is.
        out["prompt_too_long"].append(not train_on_inputs and n_prompt >= cutoff_len)
    return out


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The ids generation feeds the model: the same BOS and special-token rules as training."""
    ids = tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return _bos(tokenizer) + ids


def prompt_overhead(tokenizer, prompter) -> int:
    """Tokens the template costs with an empty instruction and input, plus BOS and EOS."""
    return len(encode_prompt(tokenizer, prompter.prompt("x"))) + 1
