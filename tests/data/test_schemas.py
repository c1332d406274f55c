"""Files in any catalogue schema read by --data (alpaca_cot/data/schemas.py, through loader.load_file): each
schema recognised and converted as convert.py converts it, the rule for ambiguous matches, the one-line errors
of a file mixing schemas, and a finetune on a file in BELLE's multi-turn schema."""

import json

import pytest

from alpaca_cot.cli import UserError
from alpaca_cot.data import loader, schemas
from alpaca_cot.data.convert import convert
from conftest import small_run

# A few rows of every non-uniform schema, as its source publishes them.
ROWS = {
    "gpt4all": [{"prompt": "Name a colour.", "response": "Blue.", "source": "p3"},
                {"prompt": "Name a fruit.", "response": "A pear."}],
    "gpteacher": [{"instruction": "Add them.", "input": "2 and 3", "response": "5"},
                  {"instruction": "Say hi.", "input": "", "response": "Hi."}],
    "dolly": [{"instruction": "Who wrote it?", "context": "Hamlet was written by Shakespeare.",
               "response": "Shakespeare.", "category": "closed_qa"},
              {"instruction": "Name a river.", "context": "", "response": "The Nile.", "category": "open_qa"}],
    "natural_instructions": [{"definition": "Translate to French.", "inputs": "cat", "targets": "chat", "id": "t1"}],
    "oig": [{"text": "<human>: What is 2+2?\n<bot>: 4.\n<human>: Times 3?\n<bot>: 12.", "metadata": {}}],
    "firefly": [{"kind": "Summary", "input": "Summarise: the sky is blue.", "target": "Blue sky."}],
    "sharegpt": [{"id": "a1", "conversations": [{"from": "system", "value": "Be brief."},
                                                {"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."},
                                                {"from": "human", "value": "Bye?"}, {"from": "gpt", "value": "Bye."}]}],
    "oasst_guanaco": [{"text": "### Human: Capital of France?### Assistant: Paris.### Human: And Spain?"
                               "### Assistant: Madrid."}],
    "belle_multiturn": [{"instruction": "Human:你好\nAssistant:你好！\nHuman:一加一？\nAssistant:", "input": "",
                         "output": "二。"}],
}


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def as_convert_py_does(rows, entry) -> list[dict]:
    out = []
    for record, why in convert(rows, entry):
        assert why is None
        clean, why = loader._check(record)
        assert why is None
        out.append(clean)
    return out


def test_every_catalogue_schema_has_rows_here():
    assert {s.name for s in schemas.known()} - {schemas.UNIFORM} == set(ROWS)


@pytest.mark.parametrize("schema", [s for s in schemas.known() if not s.uniform], ids=lambda s: s.name)
def test_each_schema_loads_to_what_convert_py_makes(tmp_path, schema):
    path = write(tmp_path / f"{schema.name}.jsonl", ROWS[schema.name])
    logged = []
    records, skipped = loader.load_file(path, log=logged.append)
    assert skipped == 0 and records == as_convert_py_does(ROWS[schema.name], schema.entry)
    assert logged == [f"{path}: read as the {schema.name} schema ({schema.describe()}), converted to "
                      "instruction/input/output"]


def test_conversions_carry_input_and_history(tmp_path):
    dolly, _ = loader.load_file(write(tmp_path / "d.jsonl", ROWS["dolly"]), log=lambda m: None)
    assert dolly[0] == {"instruction": "Who wrote it?", "input": "Hamlet was written by Shakespeare.",
                        "output": "Shakespeare."}
    chat, _ = loader.load_file(write(tmp_path / "s.jsonl", ROWS["sharegpt"]), log=lambda m: None)
    assert chat == [{"instruction": "Bye?", "input": "", "output": "Bye.", "history": [["Hello?", "Hi."]]}]
    belle, _ = loader.load_file(write(tmp_path / "b.jsonl", ROWS["belle_multiturn"]), log=lambda m: None)
    assert belle == [{"instruction": "一加一？", "input": "", "output": "二。", "history": [["你好", "你好！"]]}]


def test_uniform_files_log_nothing(tmp_path, shared_dir):
    logged = []
    records, _ = loader.load_file(shared_dir / "data" / "belle_cn.sample.json", log=logged.append)
    assert len(records) == 799 and logged == []


def test_ambiguous_matches_follow_the_stated_rule(tmp_path):
    # Rule 2: a gpteacher row without input fits dolly too; the file's other rows decide by the fields used.
    mixed_dolly = [ROWS["dolly"][0], {"instruction": "Say hi.", "response": "Hi."}]
    assert schemas.detect(list(enumerate(mixed_dolly)), "f").name == "dolly"
    bare = [{"instruction": "Say hi.", "response": "Hi."}]
    assert schemas.detect(list(enumerate(bare)), "f").name == "gpteacher"  # rule 3: the catalogue's order
    # Rule 1: instructions opening with BELLE's marker are dialogues, though they fit the uniform schema too.
    assert schemas.detect(list(enumerate(ROWS["belle_multiturn"])), "f").name == "belle_multiturn"
    plain = [{"instruction": "Explain: Human: is a label.", "input": "", "output": "It is."}]
    assert schemas.detect(list(enumerate(plain)), "f") == schemas.known()[0]


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        loader.load_file(path, log=lambda m: None, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_file_mixing_schemas_is_one_line_naming_record_and_fields(tmp_path):
    path = write(tmp_path / "mixed.jsonl", ROWS["sharegpt"] + [{"instruction": "x", "input": "", "output": "y"}])
    assert one_line_error(path, skip_bad_records=True) == (
        f"{path}: line 2: lacks field(s) 'conversations' of the sharegpt schema (conversations) that the records "
        "before it are in; it fits uniform: a file holds one schema")


def test_a_row_fitting_no_schema_in_a_converted_file_is_a_bad_record(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS["gpt4all"] + [{"prompt": "No answer here."}])
    assert one_line_error(path) == (f"{path}: line 3: lacks field(s) 'response' of the gpt4all schema (prompt, "
                                    "response) (pass --skip_bad_records to skip such records)")
    assert loader.load_file(path, skip_bad_records=True, log=lambda m: None)[1] == 1
    # and a converter's own reason: a conversation whose turns do not alternate
    bad = write(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"},
                                                          {"from": "gpt", "value": "c"}]}])
    assert one_line_error(bad).startswith(f"{bad}: line 1: turns do not alternate between user and assistant")


def test_a_file_fitting_no_schema_names_the_fields_and_the_schemas(tmp_path):
    path = write(tmp_path / "unknown.jsonl", [{"question": "Why?", "answer": "Because."}])
    message = one_line_error(path)
    assert message.startswith(f"{path}: line 1: field 'instruction' is missing (pass --skip_bad_records")
    assert message.endswith("; no record of the file fits a known schema (uniform, gpt4all, gpteacher, dolly, "
                            "natural_instructions, oig, firefly, sharegpt, oasst_guanaco, belle_multiturn)")


def test_finetune_trains_on_a_belle_multiturn_file(tiny_llama, tmp_path, capsys):
    rows = [{"instruction": f"Human:数到{i}\nAssistant:好的。\nHuman:再说一次？\nAssistant:", "input": "",
             "output": f"{i}。"} for i in range(8)]
    path = write(tmp_path / "belle_format.jsonl", rows)
    trainer = small_run(tiny_llama, path, tmp_path / "out", max_steps=2, batch_size=4, micro_batch_size=2)
    assert f"{path}: read as the belle_multiturn schema" in capsys.readouterr().out
    assert trainer.state.global_step == 2 and len(trainer.train_dataset) == 8
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
