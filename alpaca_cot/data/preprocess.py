"""The prompt and the ids/labels: a record -> its prompt (`Prompter`, one small class over a template in
templates/) -> its input_ids and labels, one tokenisation per record with the prompt masked out of the loss;
`tokenise` makes finetune's train and validation sets.

Training (to mask the prompt out of the loss) and generation (to build the same prompt, `encode_prompt`
and `prompt_ids`) both go through `Prompter.prompt`, so the two can never drift apart.

Each record becomes `<s> prompt response </s>`, tokenised in one pass; the prompt's tokens
are found from the character offsets, so the ids are exactly those that generation sees.
Labels are -100 on the prompt (unless train_on_inputs) and the ids elsewhere. EOS ends a record
only when the whole record fits in cutoff_len (as alpaca-lora does): a record cut at cutoff_len
ends without it, so that the model never learns to stop mid-sentence.

A record with `history` ([user, assistant] pairs before its instruction) becomes
`<s> prompt_1 answer_1 </s> prompt_2 answer_2 </s> ... prompt_n output </s>`. The first prompt is the
template's whole prompt; each later one is the template from its stop marker on (where the template
itself says a new turn starts, `### Instruction:` for alpaca), after a blank line. Each turn is
tokenised in one pass with its answer and split at the prompt's end, as a single record is.
Labels cover every answer and its EOS (train_on_history), or only the last one; prompts are -100
unless train_on_inputs. A conversation longer than cutoff_len loses its oldest turns first, rendered
again from the new first turn; if the last turn alone is too long it is cut like a single record.
A chat template's records are its own rendering of the conversation, tokenised in one pass and split
at the turns; the labels cover each assistant answer and its end-of-turn token.
"""

import hashlib
import json
import re
from bisect import bisect_left

from alpaca_cot import TEMPLATES_DIR

from alpaca_cot.data import chat_template
from alpaca_cot.cli import UserError

IGNORE = -100
FEATURES = ("input_ids", "labels", "length", "truncated", "prompt_too_long")

# What every template holds: the prompt with and without an input, with {instruction} (and {input}).
REQUIRED = ("prompt_input", "prompt_no_input")


class Prompter:
    """A prompt template: one small class over a JSON file in templates/, its required keys checked.

    A template with `"chat": true` (templates/chat.json) is the tokenizer's own chat template instead
    (chat_template.py): the prompt is the conversation rendered up to the assistant's turn, an answer ends
    with what the template writes after an assistant message (its end-of-turn token), no BOS or EOS of our
    own is added, and the template's special tokens are read as special (in user text too, as every chat
    template does). It needs the tokenizer."""

    def __init__(self, template_name: str = "alpaca", tokenizer=None):
        known = sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))
        if not isinstance(template_name, str) or not re.fullmatch(r"[A-Za-z0-9_][\w.-]*", template_name):
            raise UserError(f"--prompt_template_name {template_name!r}: a template is a name in {TEMPLATES_DIR} "
                            f"(known: {', '.join(known)}), not a path")
        path = TEMPLATES_DIR / f"{template_name}.json"
        if not path.is_file():
            raise UserError(f"unknown prompt template {template_name!r} ({path} not found); known: {', '.join(known)}")
        self.name = template_name
        try:
            self.template = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg}; line {e.lineno})") from None
        if not isinstance(self.template, dict):
            raise UserError(f"{path}: a prompt template is a JSON object, got a {type(self.template).__name__}")
        self.chat = self.template.get("chat") is True
        missing = [k for k in REQUIRED if not isinstance(self.template.get(k), str)] if not self.chat else []
        if missing:
            raise UserError(f"{path}: prompt template without {', '.join(repr(k) for k in missing)}")
        self.tokenizer = None
        if tokenizer is not None:
            self.bind(tokenizer)

    def bind(self, tokenizer):
        """The tokenizer whose chat template a chat Prompter renders (checked: it has one that can be trained)."""
        self.tokenizer = tokenizer
        self.turn_end = chat_template.turn_end(tokenizer, self.name) if self.chat else None
        return self

    def chat_turns(self, history: list, instruction: str, input: str, answer: str) -> tuple[list[str], list[str]]:
        """The conversation as the chat template renders it, in (prompt, answer) pieces (chat_template.turns)."""
        if self.tokenizer is None:
            raise ValueError("a chat Prompter renders with its tokenizer: Prompter(name, tokenizer)")
        return chat_template.turns(self.tokenizer, history, f"{instruction}\n\n{input}" if input else instruction, answer)

    def prompt(self, instruction: str, input: str = "") -> str:
        """The text the model sees before its response."""
        if self.chat:
            return self.chat_turns([], instruction, input, "")[0][0]
        # str.replace, not str.format: user text may hold braces.
        if input:
            text = self.template["prompt_input"].replace("{input}", input)
        else:
            text = self.template["prompt_no_input"]
        return text.replace("{instruction}", instruction, 1)

    def response(self, output: str) -> str:
        """A training record's response as the model learns it: the output, and for a chat template the end of
        the assistant's turn (an alpaca response ends with the EOS id instead, `ends_with_eos`)."""
        return self.chat_turns([], "x", "", output)[1][-1] if self.chat else output

    @property
    def ends_with_eos(self) -> bool:
        return not self.chat

    @property
    def stop(self) -> str | None:
        """The text a model writes when it starts a new turn of its own: no part of an answer."""
        return self.template.get("stop")

    def answer(self, generated: str) -> str:
        """The answer in generated text: up to the template's stop marker, stripped."""
        if self.stop:
            generated = generated.split(self.stop, 1)[0]
        return generated.strip()


def _bos(tokenizer) -> list[int]:
    """BOS exactly when the tokenizer itself adds one: LLaMA's does; SmolLM2's, whose bos_token is
    the chat marker <|im_start|>, does not; nor does one whose BOS is its EOS."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == tokenizer.eos_token_id:
        return []
    return [bos] if tokenizer("a")["input_ids"][:1] == [bos] else []


def _split_special(prompter) -> bool:
    """A literal "</s>" in user text is text, not the EOS id; a chat template's markers are special tokens."""
    return not prompter.chat


def _end(tokenizer, prompter) -> list[int]:
    """The ids after an answer: EOS; none for a chat template, whose answer text ends with its end of turn."""
    return [tokenizer.eos_token_id] if prompter.ends_with_eos else []


def _bos_for(tokenizer, prompter) -> list[int]:
    return [] if prompter.chat else _bos(tokenizer)  # a chat template writes its own BOS, if it has one


def encode_batch(batch: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool = False) -> dict:
    """For datasets.map(batched=True): adds input_ids, labels, length, truncated, prompt_too_long."""
    prompts = [prompter.prompt(i, x) for i, x in zip(batch["instruction"], batch["input"])]
    texts = [p + prompter.response(o) for p, o in zip(prompts, batch["output"])]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                    split_special_tokens=_split_special(prompter))
    bos = _bos_for(tokenizer, prompter)
    end = _end(tokenizer, prompter)
    out = {"input_ids": [], "labels": [], "length": [], "truncated": [], "prompt_too_long": []}
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        n_prompt = len(bos) + bisect_left(offsets, len(prompt), key=lambda span: span[0])
        ids = bos + ids
        truncated = len(ids) + len(end) > cutoff_len
        ids = ids[:cutoff_len] if truncated else ids + end
        labels = list(ids) if train_on_inputs else ([IGNORE] * n_prompt + ids[n_prompt:])[: len(ids)]
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["truncated"].append(truncated)
        # Nothing of the response survives the cut: unless the prompt is learned too, nothing is.
        out["prompt_too_long"].append(not train_on_inputs and n_prompt >= cutoff_len)
    return out


def encode_prompt(tokenizer, prompt: str, prompter=None) -> list[int]:
    """The ids generation feeds the model: the same BOS and special-token rules as training."""
    chat = prompter is not None and prompter.chat
    ids = tokenizer(prompt, add_special_tokens=False, split_special_tokens=not chat)["input_ids"]
    return ids if chat else _bos(tokenizer) + ids


def prompt_overhead(tokenizer, prompter) -> int:
    """Tokens the template costs with an empty instruction and input, plus BOS and the response's end."""
    end = len(encode_prompt(tokenizer, prompter.response(""), prompter)) if prompter.chat else 1
    return len(encode_prompt(tokenizer, prompter.prompt("x"), prompter)) + end


def turn_texts(prompter, history: list, instruction: str, input: str, output: str) -> tuple[list[str], list[str]]:
    """Every turn's prompt and answer text (a chat template's answers with their end of turn)."""
    if prompter.chat:
        return prompter.chat_turns(history, instruction, input, output)
    return turn_prompts(prompter, history, instruction, input), [a for _, a in history] + [output]


def turn_prompts(prompter, history: list, instruction: str, input: str = "") -> list[str]:
    """The prompt of every turn: history's user turns, then the instruction (with its input); alpaca-style
    templates (a chat template's turns are Prompter.chat_turns')."""
    prompts = [prompter.prompt(user) for user, _ in history] + [prompter.prompt(instruction, input)]
    stop = prompter.stop
    for i in range(1, len(prompts)):
        if stop and stop in prompts[i]:
            prompts[i] = "\n\n" + prompts[i][prompts[i].index(stop):]
    return prompts


def _turn_ids(tokenizer, prompts: list[str], answers: list[str], split_special: bool = True):
    """(prompt ids, answer ids) of each turn, tokenised together and split at the prompt's end. A chat template's
    conversation is tokenised in one pass, as the template's own tokenisation does, and split at every piece."""
    if not split_special:
        return _split_conversation(tokenizer, prompts, answers)
    texts = [p + a for p, a in zip(prompts, answers)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=split_special)
    turns = []
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
        n = bisect_left(offsets, len(prompt), key=lambda span: span[0])
        turns.append((ids[:n], ids[n:]))
    return turns


def _split_conversation(tokenizer, prompts, answers):
    pieces = [piece for turn in zip(prompts, answers) for piece in turn]
    enc = tokenizer("".join(pieces), add_special_tokens=False, return_offsets_mapping=True)
    ends, at = [], 0
    for piece in pieces:  # a token belongs to the piece its first character is in
        at += len(piece)
        ends.append(bisect_left(enc["offset_mapping"], at, key=lambda span: span[0]))
    ids, starts = enc["input_ids"], [0] + ends[:-1]
    return [(ids[starts[2 * k]:ends[2 * k]], ids[starts[2 * k + 1]:ends[2 * k + 1]]) for k in range(len(prompts))]


def _assemble(bos, end, turns, train_on_inputs: bool, train_on_history: bool) -> tuple[list, list]:
    """end: the ids after each answer ([EOS]; [] where the answer text ends its turn itself)."""
    ids, labels = list(bos), list(bos) if train_on_inputs else [IGNORE] * len(bos)
    for i, (prompt, answer) in enumerate(turns):
        learn = train_on_history or i == len(turns) - 1
        ids += prompt + answer + end
        labels += prompt if train_on_inputs else [IGNORE] * len(prompt)
        labels += answer + end if learn else [IGNORE] * (len(answer) + len(end))
    return ids, labels


def encode_conversation(record: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool = False,
                        train_on_history: bool = True) -> dict:
    """One record's input_ids, labels, length, truncated and prompt_too_long."""
    history = record.get("history") or []
    bos = _bos_for(tokenizer, prompter)
    end = _end(tokenizer, prompter)
    for start in range(len(history) + 1):
        kept = history[start:]
        prompts, answers = turn_texts(prompter, kept, record["instruction"], record["input"], record["output"])
        turns = _turn_ids(tokenizer, prompts, answers, _split_special(prompter))
        ids, labels = _assemble(bos, end, turns, train_on_inputs, train_on_history)
        if len(ids) <= cutoff_len:
            break
    last_prompt_end = len(ids) - len(turns[-1][1]) - len(end)
    truncated = start > 0 or len(ids) > cutoff_len
    if len(ids) > cutoff_len:  # as encode_batch: a cut answer ends without EOS
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


def map_fingerprint(dataset, tokenizer, prompter, *settings) -> str:
    """The fingerprint of Dataset.map's result over an in-memory dataset, from what decides it. Left to itself,
    datasets hashes map's arguments by pickling them, the whole tokenizer included, on every call; an
    in-memory dataset caches nothing, so the fingerprint only names the result."""
    key = [dataset._fingerprint, type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
           getattr(tokenizer, "chat_template", None), prompter.name, prompter.template, *settings]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode("utf-8")).hexdigest()[:32]


def tokenise(columns, tokenizer, prompter, cutoff_len, train_on_inputs, val_set_size, seed, train_on_history=True,
             log=print):
    """Train and validation sets of input_ids/labels/length; reports cut and dropped records."""
    from datasets import Dataset

    records = Dataset.from_dict(columns)
    settings = dict(cutoff_len=cutoff_len, train_on_inputs=train_on_inputs, train_on_history=train_on_history)
    dataset = records.map(
        encode_records, batched=True, batch_size=1000, remove_columns=list(columns),
        fn_kwargs=dict(tokenizer=tokenizer, prompter=prompter, **settings), desc="tokenising", disable_nullable=True,
        new_fingerprint=map_fingerprint(records, tokenizer, prompter, "encode_records", settings))
    too_long = sum(dataset["prompt_too_long"])
    if too_long:
        dataset = dataset.filter(lambda b: [not x for x in b], input_columns="prompt_too_long", batched=True)
        log(f"dropped {too_long} records whose prompt alone reaches cutoff_len {cutoff_len}")
    if len(dataset) <= val_set_size:
        raise UserError(f"no training data left after dropping over-long prompts ({len(dataset)} records)")
    truncated = sum(dataset["truncated"])
    log(f"{len(dataset)} records, {sum(dataset['length'])} tokens; {truncated} "
        f"({100 * truncated / len(dataset):.1f}%) truncated at cutoff_len {cutoff_len}")
    dataset = dataset.remove_columns(["truncated", "prompt_too_long"])
    if val_set_size > 0:
        split = dataset.train_test_split(test_size=val_set_size, shuffle=True, seed=seed)
        return split["train"], split["test"]
    return dataset.shuffle(seed=seed), None


def prompt_ids(tokenizer, prompter, history: list, instruction: str, input: str = "") -> list[int]:
    """What generation feeds the model for the next answer of a conversation: the ids training saw."""
    prompts, answers = turn_texts(prompter, history, instruction, input, "")
    answers[-1] = ""  # the open answer: nothing of it, not even a chat template's end of turn
    end = _end(tokenizer, prompter)
    ids, _ = _assemble(_bos_for(tokenizer, prompter), end, _turn_ids(tokenizer, prompts, answers, _split_special(prompter)),
                       False, True)
    return ids[:len(ids) - len(end)]  # no EOS after the open answer
