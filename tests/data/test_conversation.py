"""Multi-turn records (alpaca_cot/data/preprocess.py) on the real LLaMA tokenizer: the ids, the label masks of
every turn, truncation that keeps the newest turns, and the prompt generation would feed."""

import json

import pytest

from alpaca_cot.data import loader
from alpaca_cot.data.preprocess import (IGNORE, Prompter, encode_batch, encode_conversation, encode_records, prompt_ids,
                                   turn_prompts)

HISTORY = [["What is 2+2?", "It is 4."], ["And times 3?", "That makes 12."]]
RECORD = {"instruction": "Now halve it.", "input": "", "output": "Half of 12 is 6.", "history": HISTORY}


@pytest.fixture(scope="module")
def prompter():
    return Prompter("alpaca")


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_turn_prompts_render_earlier_turns(prompter):
    prompts = turn_prompts(prompter, HISTORY, "Now halve it.", "ctx")
    assert prompts[0] == prompter.prompt("What is 2+2?")
    assert prompts[1] == "\n\n### Instruction:\nAnd times 3?\n\n### Response:\n"
    assert prompts[2] == "\n\n### Instruction:\nNow halve it.\n\n### Input:\nctx\n\n### Response:\n"


@pytest.mark.parametrize("train_on_history", [True, False])
def test_label_masks_on_real_token_ids(llama_tokenizer, prompter, train_on_history):
    tok = llama_tokenizer
    out = encode_conversation(RECORD, tok, prompter, cutoff_len=1024, train_on_history=train_on_history)
    prompts = turn_prompts(prompter, HISTORY, RECORD["instruction"])
    answers = [a for _, a in HISTORY] + [RECORD["output"]]
    expected_ids, expected_labels = [tok.bos_token_id], [IGNORE]
    for i, (p, a) in enumerate(zip(prompts, answers)):
        turn = ids_of(tok, p + a)
        n_prompt = len(ids_of(tok, p))
        assert turn[:n_prompt] == ids_of(tok, p)  # the answer starts on a token boundary here
        expected_ids += turn + [tok.eos_token_id]
        learn = train_on_history or i == len(answers) - 1
        expected_labels += [IGNORE] * n_prompt + (turn[n_prompt:] + [tok.eos_token_id] if learn
                                                   else [IGNORE] * (len(turn) - n_prompt + 1))
    assert out["input_ids"] == expected_ids and out["labels"] == expected_labels
    learned = tok.decode([t for t in out["labels"] if t != IGNORE])
    assert learned.count("</s>") == (3 if train_on_history else 1)
    assert ("It is 4." in learned) == train_on_history and "Half of 12 is 6." in learned
    assert not out["truncated"] and out["length"] == len(expected_ids)


def test_truncation_keeps_the_newest_turns(llama_tokenizer, prompter):
    full = encode_conversation(RECORD, llama_tokenizer, prompter, cutoff_len=1024)
    without_first = encode_conversation(dict(RECORD, history=HISTORY[1:]), llama_tokenizer, prompter, 1024)
    cut = encode_conversation(RECORD, llama_tokenizer, prompter, cutoff_len=full["length"] - 1)
    assert cut["truncated"] and cut["input_ids"] == without_first["input_ids"]
    text = llama_tokenizer.decode(cut["input_ids"])
    assert "2+2" not in text and text.count("Below is an instruction") == 1 and "And times 3?" in text
    alone = encode_conversation(dict(RECORD, history=[]), llama_tokenizer, prompter, 1024)
    tight = encode_conversation(RECORD, llama_tokenizer, prompter, cutoff_len=alone["length"])
    assert tight["input_ids"] == alone["input_ids"]
    cut_last = encode_conversation(RECORD, llama_tokenizer, prompter, cutoff_len=alone["length"] - 2)
    # cut inside its last answer: no EOS there, as for a single record (the model must not learn to stop mid-answer)
    assert cut_last["input_ids"] == alone["input_ids"][: alone["length"] - 2]
    assert cut_last["input_ids"][-1] != llama_tokenizer.eos_token_id


def test_records_without_history_encode_as_before(llama_tokenizer, prompter):
    plain = {"instruction": ["Say hi.", "Add."], "input": ["", "2 and 3"], "output": ["Hi!", "5"]}
    mixed = {k: [plain[k][0], RECORD[k], plain[k][1]] for k in plain}
    mixed["history"] = [[], HISTORY, []]
    out = encode_records(mixed, llama_tokenizer, prompter, 512)
    reference = encode_batch(plain, llama_tokenizer, prompter, 512)
    for k in reference:
        assert [out[k][0], out[k][2]] == reference[k]
    assert out["input_ids"][1] == encode_conversation(RECORD, llama_tokenizer, prompter, 512)["input_ids"]
    assert encode_records(plain, llama_tokenizer, prompter, 512) == reference


def test_generation_prompt_is_the_training_prefix(llama_tokenizer, prompter):
    out = encode_conversation(RECORD, llama_tokenizer, prompter, 1024, train_on_history=False)
    ids = prompt_ids(llama_tokenizer, prompter, HISTORY, RECORD["instruction"])
    first_learned = next(i for i, t in enumerate(out["labels"]) if t != IGNORE)
    assert ids == out["input_ids"][:first_learned]


def test_history_is_validated_and_loaded(tmp_path):
    bad = [({"history": "hi"}, "field 'history' must be a list"),
           ({"history": [["only one"]]}, "field 'history' turn 0 must be a [user, assistant] pair"),
           ({"history": [["q", " "]]}, "field 'history' turn 0 has an empty side")]
    for extra, why in bad:
        path = tmp_path / "d.json"
        path.write_text(json.dumps([dict(instruction="i", output="o", **extra)]))
        with pytest.raises(Exception, match=why.replace("[", r"\[").replace("]", r"\]")):
            loader.load_file(path)
    path = tmp_path / "ok.json"
    path.write_text(json.dumps([RECORD, {"instruction": "i", "output": "o", "history": []}]))
    records, _ = loader.load_file(path)
    assert records[0]["history"] == HISTORY and "history" not in records[1]
    columns = loader.load(str(path), log=lambda m: None)
    assert columns["history"] == [HISTORY, []]


def test_finetune_trains_on_a_multi_turn_mixture(tiny_llama, tmp_path, capsys):
    """finetune.py end to end: multi-turn and plain records, a count per source, decontamination, two steps."""
    from alpaca_cot.train.finetune import finetune

    chat = [dict(RECORD, output=f"Half of 12 is 6 ({i}).") for i in range(12)]
    plain = [{"instruction": f"Say the number {i}.", "input": "", "output": str(i)} for i in range(20)]
    (tmp_path / "chat.json").write_text(json.dumps(chat), encoding="utf-8")
    (tmp_path / "plain.json").write_text(json.dumps(plain), encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"instruction": "Say the number 3.", "input": ""}) + "\n")
    trainer = finetune(base_model=str(tiny_llama), data=f"{tmp_path / 'chat.json'},{tmp_path / 'plain.json'}:10",
                       output_dir=str(tmp_path / "out"), quantization="none", batch_size=4, micro_batch_size=2,
                       max_steps=2, cutoff_len=256, val_set_size=0, warmup_steps=0, report_to="none",
                       train_on_history=False, decontaminate=str(tmp_path / "eval.jsonl"), dedup="exact")
    log = capsys.readouterr().out
    assert "removed 1 training records" in log and "plain: drew 10 of 19 records" in log
    # chat records repeat one prompt: exact dedup keeps one of them
    assert "exact dedup removed 11 records" in log
    assert len(trainer.train_dataset) == 11 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
