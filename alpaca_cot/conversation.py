"""Multi-turn records -> training features: earlier turns rendered by the prompt template, loss on the answers.

A record with `history` ([user, assistant] pairs before its instruction) becomes
`<s> prompt_1 answer_1 </s> prompt_2 answer_2 </s> ... prompt_n output </s>`. The first prompt is the
template's whole prompt; each later one is the template from its stop marker on (where the template
itself says a new turn starts, `### Instruction:` for alpaca), after a blank line. Each turn is
tokenised in one pass with its answer and split at the prompt's end, as preprocess.encode_batch does.

Labels cover every answer and its EOS (train_on_history), or only the last one; prompts are -100
unless train_on_inputs. A conversation longer than cutoff_len loses its oldest turns first, rendered
again from the new first turn; if the last turn alone is too long it is cut like a single record.
"""

from bisect import bisect_left

from .preprocess import IGNORE, _bos, encode_batch

FEATURES = ("input_ids", "labels", "length", "truncated", "prompt_too_long")


def turn_prompts(prompter, history: list, instruction: str, input: str = "") -> list[str]:
    """The prompt of every turn: history's user turns, then the instruction (with its input)."""
    prompts = [prompter.prompt(user) for user, _ in history] + [prompter.prompt(instruction, input)]
    stop = prompter.stop
    for i in range(1, len(prompts)):
        if stop and stop in prompts[i]:
            prompts[i] = "\n\n" + prompts[i][prompts[i].index(stop):]
    return prompts


def _turn_ids(tokenizer, prompts: list[str], answers: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of each turn, tokenised together and split at the prompt's end."""
    texts = [p + a for p, a in zip(prompts, answers)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    turns = []
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        n = bisect_left(offsets, len(prompt), key=lambda span: span[0])
        turns.append((ids[:n], ids[n:]))
    return turns


def _assemble(bos, eos, turns, train_on_inputs: bool, train_on_history: bool) -> tuple[list, list]:
    ids, labels = list(bos), list(bos) if train_on_inputs else [IGNORE] * len(bos)
    for i, (prompt, answer) in enumerate(turns):
        learn = train_on_history or i == len(turns) - 1
        ids += prompt + answer + [eos]
        labels += prompt if train_on_inputs else [IGNORE] * len(prompt)
        labels += answer + [eos] if learn else [IGNORE] * (len(answer) + 1)
    return ids, labels


def encode_conversation(record: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool = False,
                        train_on_history: bool = True) -> dict:
    """One record's input_ids, labels, length, truncated and prompt_too_long."""
    history = record.get("history") or []
    bos, eos = _bos(tokenizer), tokenizer.eos_token_id
    for start in range(len(history) + 1):
        kept = history[start:]
        prompts = turn_prompts(prompter, kept, record["instruction"], record["input"])
        turns = _turn_ids(tokenizer, prompts, [a for _, a in kept] + [record["output"]])
        ids, labels = _assemble(bos, eos, turns, train_on_inputs, train_on_history)
        if len(ids) <= cutoff_len:
            break
    last_prompt_end = len(ids) - len(turns[-1][1]) - 1
    truncated = start > 0 or len(ids) > cutoff_len
    if len(ids) > cutoff_len:  # as preprocess.encode_batch: a cut answer ends without EOS
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    return {"input_ids": ids, "labels": labels, "length": len(ids), "truncated": truncated,
            "prompt_too_long": not train_on_inputs and last_prompt_end >= cutoff_len}


def encode_records(batch: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool = False,
                   train_on_history: bool = True) -> dict:
    """encode_batch for a batch that may hold a history column: records with history go through
    encode_conversation, the others through encode_batch, in order."""
    histories = batch.get("history") or [None] * len(batch["instruction"])
    plain = [i for i, h in enumerate(histories) if not h]
    rows = {}
    if plain:
        out = encode_batch({k: [batch[k][i] for i in plain] for k in ("instruction", "input", "output")},
                           tokenizer, prompter, cutoff_len, train_on_inputs)
        rows = {i: {k: v[j] for k, v in out.items()} for j, i in enumerate(plain)}
    for i, history in enumerate(histories):
        if history:
            record = {k: batch[k][i] for k in ("instruction", "input", "output")}
            rows[i] = encode_conversation(dict(record, history=history), tokenizer, prompter, cutoff_len,
                                          train_on_inputs, train_on_history)
    return {k: [rows[i][k] for i in range(len(histories))] for k in FEATURES}


def prompt_ids(tokenizer, prompter, history: list, instruction: str, input: str = "") -> list[int]:
    """What generation feeds the model for the next answer of a conversation: the ids training saw."""
    turns = _turn_ids(tokenizer, turn_prompts(prompter, history, instruction, input), [a for _, a in history] + [""])
    ids, _ = _assemble(_bos(tokenizer), tokenizer.eos_token_id, turns, False, True)
    return ids[:-1]  # no EOS after the open answer
