"""Rows of a catalogue source, in its own schema, -> uniform records {instruction, input, output[, history]}.

One converter per catalogue format; each maps one row to a record, or to the reason it cannot:
- alpaca: named columns for instruction, input (optional) and output, and optionally history;
- prompt_completion: a prompt column and a completion column;
- sharegpt: a list of messages, each a dict with a role and a content tag (ShareGPT's from/value,
  human/gpt); system messages are left out;
- dialogue_text: one text with turn markers (BELLE's `Human:`/`Assistant:`, OIG's `<human>:`/`<bot>:`),
  and optionally an output column holding the last answer.
A conversation becomes its last user turn and answer, with the turns before it as history. It must
alternate user and assistant turns; a leading assistant turn and a trailing user turn are dropped.
"""

import re

SHAREGPT_TAGS = {"role": "from", "content": "value", "user": "human", "assistant": "gpt", "system": "system"}


def _text(row: dict, column: str | None) -> str:
    value = row.get(column) if column else ""
    return value if isinstance(value, str) else "" if value is None else value


def from_turns(turns: list[tuple[str, str]]) -> tuple[dict | None, str | None]:
    """[(role, text), ...] with roles user/assistant -> a record with history, or why not."""
    while turns and turns[0][0] == "assistant":
        turns = turns[1:]
    if turns and turns[-1][0] == "user":
        turns = turns[:-1]
    if not turns:
        return None, "no user turn followed by an answer"
    if any(role != ("user", "assistant")[i % 2] for i, (role, _) in enumerate(turns)):
        return None, "turns do not alternate between user and assistant"
    pairs = [[turns[i][1], turns[i + 1][1]] for i in range(0, len(turns), 2)]
    record = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if len(pairs) > 1:
        record["history"] = pairs[:-1]
    return record, None


def alpaca(row: dict, entry: dict):
    columns = entry["columns"]
    record = {k: _text(row, columns.get(k)) for k in ("instruction", "input", "output")}
    if columns.get("history"):
        record["history"] = row.get(columns["history"])
    return record, None


def prompt_completion(row: dict, entry: dict):
    columns = entry["columns"]
    return {"instruction": _text(row, columns["prompt"]), "input": "", "output": _text(row, columns["completion"])}, None


def sharegpt(row: dict, entry: dict):
    tags = {**SHAREGPT_TAGS, **entry.get("tags", {})}
    roles = {tags["user"]: "user", tags["assistant"]: "assistant"}
    messages = row.get(entry["columns"]["messages"])
    if not isinstance(messages, list):
        return None, f"column '{entry['columns']['messages']}' is not a list of messages"
    turns = []
    for message in messages:
        role = message.get(tags["role"]) if isinstance(message, dict) else None
        if role == tags["system"]:
            continue
        if role not in roles:
            return None, f"a message has the unknown role {role!r}"
        turns.append((roles[role], str(message.get(tags["content"]) or "").strip()))
    return from_turns(turns)


def dialogue_text(row: dict, entry: dict):
    markers = entry["markers"]
    roles = {markers["user"]: "user", markers["assistant"]: "assistant"}
    pattern = "(" + "|".join(re.escape(m) for m in sorted(roles, key=len, reverse=True)) + ")"
    parts = re.split(pattern, _text(row, entry["columns"]["text"]))
    turns = [(roles[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    output_column = entry["columns"].get("output")
    if output_column:
        if turns and turns[-1] == ("assistant", ""):
            turns = turns[:-1]
        turns.append(("assistant", _text(row, output_column).strip()))
    return from_turns(turns)


CONVERTERS = {"alpaca": alpaca, "prompt_completion": prompt_completion, "sharegpt": sharegpt,
              "dialogue_text": dialogue_text}


def convert(rows, entry: dict):
    """(record, None) or (None, reason) for every row, in order."""
    converter = CONVERTERS[entry["format"]]
    for row in rows:
        yield converter(row, entry)
