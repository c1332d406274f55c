"""Tests of the data registry and record validation (alpaca_cot/data/loader.py), of scripts/data_stats.py
and of scripts/download_data.py (its offline error path only: nothing here reaches a hub)."""

import json
import os
import re

import pytest

from alpaca_cot import DATA_DIR, ROOT

from alpaca_cot.data import catalog, loader
from alpaca_cot.cli import UserError
from alpaca_cot.data.preprocess import Prompter, encode_batch, encode_prompt
from alpaca_cot.data.stats import length_stats
from conftest import one_error_line, run_python

GOOD = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}


def write(path, records, blank_lines=False):
    """A JSON list, or JSON Lines for .jsonl (with blank lines between, to check line numbering)."""
    if path.suffix == ".jsonl":
        sep = "\n\n" if blank_lines else "\n"
        path.write_text(sep.join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        loader.load_file(path, **kwargs)
    return str(e.value)


# ---------------------------------------------------------------- registry


@pytest.fixture
def data_dir(tmp_path):
    for source in catalog.REGISTRY.values():
        write(tmp_path / source.file, [GOOD])
    return tmp_path


def registered(data_dir, *names):
    return [data_dir / catalog.REGISTRY[n].file for n in names]


def test_combination_resolves_in_order(data_dir):
    assert catalog.resolve("alpaca-belle-cot", data_dir=data_dir) == registered(data_dir, "alpaca", "belle", "cot")
    assert catalog.resolve("cot-alpaca", data_dir=data_dir) == registered(data_dir, "cot", "alpaca")
    assert catalog.resolve("belle", data_dir=data_dir) == registered(data_dir, "belle")


def test_duplicates_collapse(data_dir):
    assert catalog.resolve("cot-alpaca-cot,alpaca,cot", data_dir=data_dir) == registered(data_dir, "cot", "alpaca")
    path = str(data_dir / "alpaca_data_cleaned.json")
    assert catalog.resolve(f"{path},{path}", data_dir=data_dir) == registered(data_dir, "alpaca")


def test_paths_and_comma_lists(tmp_path, data_dir):
    a = write(tmp_path / "a.json", [GOOD])
    b = write(tmp_path / "b.jsonl", [GOOD])
    expected = [a, *registered(data_dir, "belle", "cot"), b]
    assert catalog.resolve(f"{a}, belle-cot ,{b}", data_dir=data_dir) == expected
    # fire turns `--data a,b` into a tuple
    assert catalog.resolve((str(a), "belle-cot", str(b)), data_dir=data_dir) == expected


def test_unknown_name_lists_known_ones(data_dir):
    with pytest.raises(UserError) as e:
        catalog.resolve("alpaca-bogus", data_dir=data_dir)
    assert "'bogus'" in str(e.value)
    for name in catalog.REGISTRY:
        assert name in str(e.value)


@pytest.mark.parametrize("name, needle", [
    ("cot", "python scripts/format_cot.py --out data/CoT_data.json"),
    ("alpaca", "python scripts/download_data.py alpaca"),
    ("alpaca", "yahma/alpaca-cleaned"),
    ("belle", "python scripts/download_data.py belle"),
    ("belle", "BelleGroup/train_0.5M_CN"),
])
def test_missing_registry_file_says_how_to_get_it(data_dir, name, needle):
    (data_dir / catalog.REGISTRY[name].file).unlink()
    with pytest.raises(UserError) as e:
        catalog.resolve("alpaca-belle-cot", data_dir=data_dir)
    message = str(e.value)
    assert needle in message and str(data_dir / catalog.REGISTRY[name].file) in message
    # The command it names must exist.
    for command in re.findall(r"python (scripts/\S+\.py)", message):
        assert (ROOT / command).is_file(), command


def test_missing_path(tmp_path):
    with pytest.raises(UserError) as e:
        catalog.resolve(f"demo,{tmp_path / 'nope.jsonl'}")
    assert str(tmp_path / "nope.jsonl") in str(e.value) and "not found" in str(e.value)


# ---------------------------------------------------------------- validation


def test_not_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"records": [GOOD]}), encoding="utf-8")
    message = error_of(path)
    assert str(path) in message and "expected a JSON list" in message and "dict" in message


def test_invalid_json_gives_line_and_column(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"instruction": "a",\n   "output": }\n]\n', encoding="utf-8")
    message = error_of(path)
    assert str(path) in message and "not valid JSON" in message and "line 3 column 14" in message


def test_invalid_jsonl_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"instruction": "a", "output": "b"\n', encoding="utf-8")
    message = error_of(path)
    assert str(path) in message and "line 3:" in message and "not valid JSON" in message


BAD = [
    ("not an object", "just text", "expected an object with instruction/input/output, got str"),
    ("missing instruction", {"input": "", "output": "x"}, "field 'instruction' is missing"),
    ("missing output", {"instruction": "x", "input": ""}, "field 'output' is missing"),
    ("non-string instruction", {"instruction": 7, "output": "x"}, "field 'instruction' must be a string, got int"),
    ("non-string output", {"instruction": "x", "output": {"a": 1}}, "field 'output' must be a string, got dict"),
    ("empty output", {"instruction": "x", "output": ""}, "field 'output' is empty"),
    ("whitespace output", {"instruction": "x", "output": " \n\t"}, "field 'output' is empty"),
    ("whitespace instruction", {"instruction": "  ", "output": "x"}, "field 'instruction' is empty"),
    ("non-string input", {"instruction": "x", "input": ["a"], "output": "y"}, "field 'input' must be a string"),
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("case, bad, why", BAD, ids=[b[0] for b in BAD])
def test_bad_record_names_file_place_and_field(tmp_path, suffix, case, bad, why):
    path = write(tmp_path / f"d{suffix}", [GOOD, GOOD, bad, GOOD], blank_lines=True)
    message = error_of(path)
    # record index 2 in a JSON list; line 5 in JSON Lines with a blank line between records
    place = "record 2" if suffix == ".json" else "line 5"
    assert message.startswith(f"{path}: {place}: {why}"), message
    assert "--skip_bad_records" in message


def test_input_defaults_and_placeholders(tmp_path):
    records = [{"instruction": "a", "output": "b"}, {"instruction": "a", "input": None, "output": "b"},
               {"instruction": "a", "input": "Noinput", "output": "b"},
               {"instruction": "a", "input": " <noinput> ", "output": "b"},
               {"instruction": "a", "input": "No input", "output": "b"},
               {"instruction": "a", "input": "real input", "output": "b"}]
    loaded, skipped = loader.load_file(write(tmp_path / "d.json", records))
    assert skipped == 0
    assert [r["input"] for r in loaded] == ["", "", "", "", "", "real input"]
    assert all(set(r) == {"instruction", "input", "output"} for r in loaded)


def test_skip_bad_records_skips_and_counts(tmp_path):
    records = [GOOD, BAD[1][1], GOOD, BAD[5][1], BAD[0][1], GOOD]
    path = write(tmp_path / "d.jsonl", records)
    loaded, skipped = loader.load_file(path, skip_bad_records=True)
    assert (len(loaded), skipped) == (3, 3) and loaded[0] == GOOD
    logged = []
    columns = loader.load(str(path), skip_bad_records=True, log=logged.append)
    assert len(columns["output"]) == 3 and logged == [f"{path}: skipped 3 bad records"]


def test_json_named_file_holding_json_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("\n".join(json.dumps(r) for r in [GOOD, GOOD, GOOD]) + "\n", encoding="utf-8")
    loaded, _ = loader.load_file(path)
    assert loaded == [GOOD] * 3


def test_belle_eval_set_is_read_as_json_lines(shared_dir):
    # A .json file with 1000 JSON Lines records of other fields: the error is per line, not "invalid JSON".
    path = shared_dir / "data" / "belle_eval" / "eval_set.json"
    assert error_of(path).startswith(f"{path}: line 1: field 'instruction' is missing")
    assert loader.load_file(path, skip_bad_records=True) == ([], 1000)


def test_not_utf8(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(json.dumps([GOOD]).replace("Add", "Caf\u00e9").encode("latin-1"))
    message = error_of(path)
    assert str(path) in message and "not UTF-8" in message


def test_no_usable_records(tmp_path):
    path = write(tmp_path / "d.json", [BAD[5][1]])
    with pytest.raises(UserError, match="no usable records"):
        loader.load(str(path), skip_bad_records=True, log=lambda m: None)


# ---------------------------------------------------------------- the real shared samples


@pytest.fixture(scope="module")
def alpaca_sample(shared_dir):
    return shared_dir / "data" / "alpaca_cleaned.sample.json"


@pytest.fixture(scope="module")
def belle_sample(shared_dir):
    return shared_dir / "data" / "belle_cn.sample.json"


def test_alpaca_sample(alpaca_sample):
    raw = json.loads(alpaca_sample.read_text(encoding="utf-8"))
    empty = [i for i, r in enumerate(raw) if not r["output"].strip()]
    assert len(raw) == 1600 and 1 <= len(empty) <= 8
    assert error_of(alpaca_sample) == (f"{alpaca_sample}: record {empty[0]}: field 'output' is empty "
                                       "(pass --skip_bad_records to skip such records)")
    loaded, skipped = loader.load_file(alpaca_sample, skip_bad_records=True)
    assert skipped == len(empty) and len(loaded) == len(raw) - len(empty)
    assert not any(r["input"].strip().lower() == "noinput" for r in loaded)


def test_belle_sample(belle_sample):
    columns = loader.load(str(belle_sample))
    assert len(columns["output"]) == 799 and set(columns["source"]) == {"belle_cn.sample"}
    assert all(x == "" for x in columns["input"])


# ---------------------------------------------------------------- command line


def test_finetune_missing_data_file():
    line = one_error_line(run_python("finetune.py", "--data", "/nonexistent.json", "--quantization", "none"))
    assert "/nonexistent.json" in line


def test_finetune_malformed_data_file(tmp_path):
    path = write(tmp_path / "bad.jsonl", [GOOD, {"instruction": "x"}])
    line = one_error_line(run_python("finetune.py", "--data", path, "--quantization", "none",
                                 "--output_dir", tmp_path / "out"))
    assert str(path) in line and "line 2" in line and "'output'" in line


def test_length_stats_splits_by_source(llama_tokenizer):
    # Record 4's input is blank but not empty: the prompter shows it, so it is not counted as empty.
    columns = {"instruction": ["Say hi.", "Add 2 and 3.", "Name a colour.", "Echo."], "input": ["", "now", "", " "],
               "output": ["Hi!", "The sum is 5.", "Blue " * 40, "ok"], "source": ["a", "b", "a", "c"]}
    prompter = Prompter()
    stats = length_stats(columns, llama_tokenizer, prompter, cutoff_len=70)
    a, b, total = stats["sources"]["a"], stats["sources"]["b"], stats["total"]
    assert list(stats["sources"]) == ["a", "b", "c"]
    assert (a["records"], b["records"], total["records"]) == (2, 1, 4)
    assert (a["empty_input_share"], b["empty_input_share"], stats["sources"]["c"]["empty_input_share"]) == (1, 0, 0)
    assert (a["over_cutoff"], b["over_cutoff"], total["over_cutoff"]) == (1, 0, 1)
    assert a["p50"] < 70 < a["max"] == a["p90"] == total["max"]
    # The prompt part is what generation feeds the model for the same record.
    assert b["prompt_mean"] == len(encode_prompt(llama_tokenizer, prompter.prompt("Add 2 and 3.", "now")))
    assert b["max"] == b["prompt_mean"] + b["response_mean"] <= 70
    assert b["prompt_too_long"] == 0
    n_prompt = int(b["prompt_mean"])
    at = [length_stats(columns, llama_tokenizer, prompter, cutoff_len=cut)["sources"]["b"]
          for cut in (b["max"], b["max"] - 1, n_prompt + 2, n_prompt + 1)]
    # The same edges as encode_batch: truncated when length > cutoff; dropped when the prompt reaches cutoff - 1.
    assert [s["over_cutoff"] for s in at] == [0, 1, 1, 1]
    assert [s["prompt_too_long"] for s in at] == [0, 0, 0, 1]
    assert length_stats(columns, llama_tokenizer, prompter, cutoff_len=70, num_proc=2) == stats


@pytest.fixture(scope="module")
def stats_run(tmp_path_factory, tiny_llama, alpaca_sample, belle_sample):
    out = tmp_path_factory.mktemp("stats") / "stats.json"
    result = run_python("scripts/data_stats.py", "--data", f"{alpaca_sample},{belle_sample}", "--base_model", tiny_llama,
                    "--cutoff_len", 256, "--skip_bad_records", "--json", out)
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text(encoding="utf-8"))


def test_data_stats_end_to_end(stats_run, llama_tokenizer, alpaca_sample, belle_sample):
    result, stats = stats_run
    assert stats["cutoff_len"] == 256 and stats["template"] == "alpaca"
    prompter = Prompter("alpaca")
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("source ")).split()
    for path, stem in ((alpaca_sample, "alpaca_cleaned.sample"), (belle_sample, "belle_cn.sample")):
        records, _ = loader.load_file(path, skip_bad_records=True)
        s = stats["sources"][stem]
        assert s["records"] == len(records)
        assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
        assert re.search(rf"^{re.escape(stem)}\s+{len(records)}\s", result.stdout, re.M)
        printed = dict(zip(header, next(line for line in lines if line.startswith(stem + " ")).split()))
        no_input = 100 * sum(not r["input"] for r in records) / len(records)
        assert abs(float(printed["no_input%"]) - no_input) <= 0.05 + 1e-9
        assert int(printed["len_max"]) == s["max"] and int(printed["over_cutoff"]) == s["over_cutoff"]
        # Independently: BOS + prompt and response tokenised together + EOS.
        texts = [prompter.prompt(r["instruction"], r["input"]) + r["output"] for r in records]
        ids = llama_tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert s["max"] == max(len(x) for x in ids) + 2
        batch = {k: [r[k] for r in records] for k in ("instruction", "input", "output")}
        encoded = encode_batch(batch, llama_tokenizer, prompter, cutoff_len=256)
        assert s["over_cutoff"] == sum(encoded["truncated"]) > 0
        assert s["empty_input_share"] == round(sum(not r["input"] for r in records) / len(records), 4)
    total = stats["total"]
    assert total["records"] == sum(s["records"] for s in stats["sources"].values())
    assert total["over_cutoff"] == sum(s["over_cutoff"] for s in stats["sources"].values())
    assert total["max"] == max(s["max"] for s in stats["sources"].values())


def test_data_stats_bad_data_is_one_line(tiny_llama, alpaca_sample):
    line = one_error_line(run_python("scripts/data_stats.py", "--data", alpaca_sample, "--base_model", tiny_llama))
    assert str(alpaca_sample) in line and "'output' is empty" in line


# ---------------------------------------------------------------- download_data.py


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    """Offline, with an empty hub cache: one for the module, so that its runs share one test zygote."""
    home = tmp_path_factory.mktemp("hf")
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(home),
                HF_DATASETS_CACHE=str(home / "datasets"))


@pytest.mark.parametrize("name, dataset_id", [("alpaca", "yahma/alpaca-cleaned"),
                                              ("belle", "BelleGroup/train_0.5M_CN")])
def test_download_offline_is_one_clean_line(tmp_path, offline_env, name, dataset_id):
    out = tmp_path / "out" / "loader.json"
    line = one_error_line(run_python("scripts/download_data.py", name, "--out", out, env=offline_env))
    assert dataset_id in line and str(out) in line and "by hand" in line
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temp file left either


def test_download_default_target_is_the_registry_file(offline_env):
    line = one_error_line(run_python("scripts/download_data.py", "alpaca", env=offline_env))
    assert str(DATA_DIR / catalog.REGISTRY["alpaca"].file) in line


def test_download_unknown_name(offline_env):
    line = one_error_line(run_python("scripts/download_data.py", "llama", env=offline_env))
    assert "'llama'" in line and "alpaca, belle, cot" in line


def test_download_writes_the_records(tmp_path, monkeypatch, capsys):
    """The hub call replaced by a local Dataset: columns are picked, extra ones dropped, the file loads."""
    import importlib.util

    import datasets

    spec = importlib.util.spec_from_file_location("download_data", ROOT / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {"instruction": ["a", "b"], "input": ["", "x"], "output": ["1", "2"], "id": [7, 8]}
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "belle.json"
    module.main("belle", out=str(out))
    assert calls == [(("BelleGroup/train_0.5M_CN",), {"split": "train"})]
    assert json.loads(out.read_text(encoding="utf-8")) == [
        {"instruction": "a", "input": "", "output": "1"}, {"instruction": "b", "input": "x", "output": "2"}]
    assert "2 records" in capsys.readouterr().out


def test_download_cot_runs_format_cot(shared_dir, tmp_path):
    out = tmp_path / catalog.REGISTRY["cot"].file
    result = run_python("scripts/download_data.py", "cot", "--src", shared_dir / "data" / "flan_cot", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "format_cot.py" in result.stdout
    assert catalog.resolve("cot", data_dir=tmp_path) == [out]
    assert len(loader.load("cot", data_dir=tmp_path)["output"]) == 33443


def test_jsonl_with_line_separator_chars_and_bom(tmp_path):
    # U+2028 is legal inside a JSON string (json.dumps with ensure_ascii=False writes it raw).
    rec = {"instruction": "a\u2028b", "input": "", "output": "c\u2029d"}
    path = tmp_path / "x.jsonl"
    path.write_text("\ufeff" + json.dumps(rec, ensure_ascii=False) + "\n" + json.dumps(rec, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    records, skipped = loader.load_file(path)
    assert records == [rec, rec] and skipped == 0


def test_same_file_named_twice_is_read_once(tmp_path, monkeypatch):
    path = tmp_path / "demo.json"
    path.write_text('[{"instruction": "i", "output": "o"}]')
    monkeypatch.chdir(tmp_path)
    assert len(catalog.resolve(f"demo.json,{path}")) == 1
