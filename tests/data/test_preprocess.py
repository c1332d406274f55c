"""Prompt masking, EOS and truncation on real LLaMA token ids."""

import pytest

from alpaca_cot.data.preprocess import IGNORE, Prompter, encode_batch, encode_prompt, prompt_overhead

PROMPTER = Prompter("alpaca")


def encode(tokenizer, records, cutoff_len=512, train_on_inputs=False):
    batch = {k: [r[k] for r in records] for k in ("instruction", "input", "output")}
    return encode_batch(batch, tokenizer, PROMPTER, cutoff_len, train_on_inputs)


def test_prompt_masked_response_and_eos_learned(llama_tokenizer):
    rec = {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."}
    out = encode(llama_tokenizer, [rec])
    ids, labels = out["input_ids"][0], out["labels"][0]
    prompt_ids = encode_prompt(llama_tokenizer, PROMPTER.prompt(rec["instruction"]))
    assert ids[0] == 1 and ids[-1] == 2  # <s> ... </s>
    assert ids[: len(prompt_ids)] == prompt_ids  # training sees the prompt exactly as generation does
    # The instruction's ids as STACK.md lists them appear inside the prompt, but for the first
    # ("▁Give"): after the template's newline the word has no leading-space piece.
    known = [2211, 25562, 363, 7952, 292, 9045, 29891, 29889]
    assert any(ids[i:i + len(known)] == known for i in range(len(ids)))
    assert labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert labels[len(prompt_ids):] == ids[len(prompt_ids):]
    # The response is "Eat well." + EOS, tokenised as it follows the prompt's newline.
    assert llama_tokenizer.decode(ids[len(prompt_ids):-1]) == "Eat well."
    assert out["length"][0] == len(ids) and out["truncated"][0] is False


def test_train_on_inputs_learns_everything(llama_tokenizer):
    rec = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    out = encode(llama_tokenizer, [rec], train_on_inputs=True)
    assert out["labels"][0] == out["input_ids"][0]


def test_truncated_record_ends_without_eos(llama_tokenizer):
    rec = {"instruction": "Repeat.", "input": "", "output": "word " * 400}
    out = encode(llama_tokenizer, [rec], cutoff_len=64)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert len(ids) == 64 and 2 not in ids and labels[-1] == ids[-1] != 2
    assert out["truncated"][0] is True and out["prompt_too_long"][0] is False


def test_prompt_longer_than_cutoff_is_flagged(llama_tokenizer):
    rec = {"instruction": "long " * 200, "input": "", "output": "ok"}
    assert encode(llama_tokenizer, [rec], cutoff_len=64)["prompt_too_long"] == [True]


def test_literal_special_tokens_in_text_stay_text(llama_tokenizer):
    rec = {"instruction": "Explain </s> and <s>.", "input": "", "output": "They are </s> markers."}
    ids = encode(llama_tokenizer, [rec])["input_ids"][0]
    assert ids.count(2) == 1 and ids.count(1) == 1  # only our own BOS and EOS


def test_input_and_chinese_records(llama_tokenizer, shared_dir):
    import json

    belle = json.loads((shared_dir / "data" / "belle_cn.sample.json").read_text(encoding="utf-8"))[:50]
    out = encode(llama_tokenizer, belle, cutoff_len=4096)
    for rec, ids, labels in zip(belle, out["input_ids"], out["labels"]):
        n_prompt = labels.index(next(x for x in labels if x != IGNORE))
        assert llama_tokenizer.decode(ids[n_prompt:-1]) == rec["output"].strip() or \
            rec["output"].strip() in llama_tokenizer.decode(ids[n_prompt:-1])
        assert PROMPTER.prompt(rec["instruction"]).strip() in llama_tokenizer.decode(ids[:n_prompt],
                                                                                        skip_special_tokens=True)


def test_prompt_overhead_counts_template_tokens(llama_tokenizer):
    overhead = prompt_overhead(llama_tokenizer, PROMPTER)
    assert 30 < overhead < 60


def test_a_template_without_its_keys_is_one_line(tmp_path, monkeypatch):
    from alpaca_cot.data import preprocess
    from alpaca_cot.cli import UserError

    (tmp_path / "broken.json").write_text('{"prompt_input": "{instruction} {input}"}', encoding="utf-8")
    monkeypatch.setattr(preprocess, "TEMPLATES_DIR", tmp_path)
    with pytest.raises(UserError, match=r"broken.json: prompt template without 'prompt_no_input'"):
        preprocess.Prompter("broken")
    with pytest.raises(UserError, match=r"unknown prompt template 'flan_cot'"):
        preprocess.Prompter("flan_cot")


def test_tokenise_names_its_result_without_pickling_the_tokenizer(llama_tokenizer, monkeypatch):
    """datasets would hash map's arguments, the tokenizer among them, by pickling them on every call; tokenise
    names the result from what decides it instead, and the name still follows every setting."""
    from datasets import Dataset
    from datasets.fingerprint import Hasher

    from alpaca_cot.data.preprocess import map_fingerprint, tokenise

    def holds_tokenizer(value) -> bool:
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        return value is llama_tokenizer or any(holds_tokenizer(v) for v in inner)

    hashed, hash_ = [], Hasher.hash
    monkeypatch.setattr(Hasher, "hash", classmethod(lambda cls, value: hashed.append(holds_tokenizer(value)) or
                                                    hash_(value)))
    columns = {"instruction": ["Add 2 and 3.", "Name a colour."], "input": ["", ""], "output": ["5", "Red"]}
    train, _ = tokenise(columns, llama_tokenizer, Prompter("alpaca"), 64, False, 0, seed=0, log=lambda m: None)
    assert len(train) == 2 and hashed and not any(hashed)

    records = Dataset.from_dict(columns)
    key = map_fingerprint(records, llama_tokenizer, Prompter("alpaca"), {"cutoff_len": 64})
    assert key == map_fingerprint(records, llama_tokenizer, Prompter("alpaca"), {"cutoff_len": 64})
    assert key != map_fingerprint(records, llama_tokenizer, Prompter("alpaca"), {"cutoff_len": 128})
    assert key != map_fingerprint(records, llama_tokenizer, Prompter("alpaca_legacy"), {"cutoff_len": 64})
    assert key != map_fingerprint(Dataset.from_dict({**columns, "output": ["6", "Red"]}), llama_tokenizer,
                                  Prompter("alpaca"), {"cutoff_len": 64})
