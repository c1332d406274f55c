"""The catalogue (data/catalog.json) and scripts/download_data.py: every entry is valid, and every hub entry
converts, through `datasets` (load_dataset on a local JSON Lines file in the source's own schema), into records
that `--data` reads. Nothing here reaches a hub."""

import importlib.util
import json

import pytest

from alpaca_cot import ROOT

from alpaca_cot.data import catalog, loader
from alpaca_cot.cli import UserError
from conftest import run_python

ENTRIES = catalog.load_catalog()
HUB = [name for name, e in ENTRIES.items() if "hub" in e["source"]]
ALPACA_ROW = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
# name -> (rows in the source's schema, the records they become)
FIXTURES = {
    "dolly": ([{"instruction": "Who wrote Hamlet?", "context": "Hamlet is a play.", "response": "Shakespeare.",
                "category": "closed_qa"}],
              [{"instruction": "Who wrote Hamlet?", "input": "Hamlet is a play.", "output": "Shakespeare."}]),
    "gpt4all": ([{"prompt": "Say hi.", "response": "Hi!", "source": "laion/unified_chip2"},
                 {"prompt": "Empty?", "response": "", "source": "x"}],
                [{"instruction": "Say hi.", "input": "", "output": "Hi!"}]),
    "gpteacher": ([{"instruction": "Add.", "input": "2 and 3", "response": "5"}],
                  [{"instruction": "Add.", "input": "2 and 3", "output": "5"}]),
    "natural_instructions": ([{"task_name": "task001_quoref_question_generation", "id": "task001-1",
                               "definition": "Write a question.", "inputs": "A passage.", "targets": "Who?"}],
                             [{"instruction": "Write a question.", "input": "A passage.", "output": "Who?"}]),
    "firefly": ([{"kind": "ClassicalChinese", "input": "翻译成现代文：学而时习之", "target": "学了又时常温习它"}],
                [{"instruction": "翻译成现代文：学而时习之", "input": "", "output": "学了又时常温习它"}]),
    "oig": ([{"text": "<human>: What is 2+2?\n<bot>: 4.\n<human>: And 3+3?\n<bot>: 6.", "metadata": {"source": "chip2"}}],
            [{"instruction": "And 3+3?", "input": "", "output": "6.", "history": [["What is 2+2?", "4."]]}]),
    "sharegpt": ([{"id": "a1", "conversations": [
                     {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                     {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Bye"},
                     {"from": "gpt", "value": "Goodbye."}, {"from": "human", "value": "unanswered"}]},
                  {"id": "a2", "conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"},
                                                 {"from": "gpt", "value": "z"}]}],
                 [{"instruction": "Bye", "input": "", "output": "Goodbye.", "history": [["Hi", "Hello!"]]}]),
    "oasst_guanaco": ([{"text": "### Human: Capital of France?### Assistant: Paris.### Human: And Spain?"
                                "### Assistant: Madrid."}],
                      [{"instruction": "And Spain?", "input": "", "output": "Madrid.",
                        "history": [["Capital of France?", "Paris."]]}]),
    "belle_multiturn": ([{"instruction": "Human:你好\nAssistant:你好！有什么可以帮你？\nHuman:讲个笑话\nAssistant:",
                          "input": "", "output": "从前有座山。"}],
                        [{"instruction": "讲个笑话", "input": "", "output": "从前有座山。",
                          "history": [["你好", "你好！有什么可以帮你？"]]}]),
}
for _name in HUB:  # the alpaca-format sources share the schema instruction/input/output (some add `text`)
    if _name not in FIXTURES and ENTRIES[_name]["format"] == "alpaca":
        FIXTURES[_name] = ([dict(ALPACA_ROW, text="Below is ..."), {"instruction": "No answer", "input": "", "output": ""}],
                           [ALPACA_ROW])


@pytest.fixture(scope="module")
def download_module():
    spec = importlib.util.spec_from_file_location("download_data", ROOT / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """load_dataset(hub_id, ...) answered from a local JSON Lines file through load_dataset("json")."""
    import datasets

    real, calls, files = datasets.load_dataset, [], {}

    def fake(path, **kwargs):
        calls.append((path, kwargs))
        return real("json", data_files=str(files[path]), split="train")

    def serve(hub_id, rows):
        files[hub_id] = tmp_path / f"{len(files)}.jsonl"
        files[hub_id].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return serve, calls


def test_catalogue_has_the_collection():
    assert len(ENTRIES) >= 15 and list(ENTRIES)[:4] == ["alpaca", "belle", "cot", "demo"]
    languages = {lang for e in ENTRIES.values() for lang in e["languages"]}
    tasks = {e["task"] for e in ENTRIES.values()}
    assert {"en", "zh"} <= languages and {"general", "cot", "chat", "math", "code", "finance"} <= tasks
    assert {e["format"] for e in ENTRIES.values()} == set(catalog.FORMATS)


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_is_complete(name):
    entry = ENTRIES[name]
    assert all(entry[f] not in ("", []) for f in ("file", "license", "citation", "languages")), entry
    assert entry["records"] is None or entry["records"] > 0
    assert entry["records"] is not None or "records" in entry["unverified"]
    source = entry["source"]
    if "hub" in source:
        assert source["revision"] is not None or "revision" in entry["unverified"]
        assert source["revision"] is None or len(source["revision"]) == 40
    assert set(entry["unverified"]) <= set(catalog.FIELDS) | {"source.data_files", "revision"}


def test_names_and_files_are_unique():
    raw = json.loads(catalog.CATALOG_PATH.read_text(encoding="utf-8"), object_pairs_hook=lambda pairs: pairs)
    names = [k for k, _ in dict(raw)["sources"]]
    assert len(names) == len(set(names))
    files = [e["file"] for e in ENTRIES.values()]
    assert len(files) == len(set(files))


def test_a_bad_entry_names_entry_and_field(tmp_path):
    bad = {"sources": {"x": {k: v for k, v in ENTRIES["dolly"].items() if k != "license"}}}
    (tmp_path / "c.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"entry 'x': field\(s\) license missing"):
        catalog.load_catalog(tmp_path / "c.json")


def test_every_hub_entry_has_a_fixture():
    assert sorted(FIXTURES) == sorted(HUB)


@pytest.mark.parametrize("name", HUB)
def test_download_converts_through_datasets(name, tmp_path, local_hub, download_module, capsys):
    serve, calls = local_hub
    rows, expected = FIXTURES[name]
    source = ENTRIES[name]["source"]
    serve(source["hub"], rows)
    out = tmp_path / "out" / ENTRIES[name]["file"]
    download_module.main(name, out=str(out))
    assert calls == [(source["hub"], {k: source[k2] for k2, k in download_module.LOAD_ARGS.items()
                                      if source.get(k2) is not None})]
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == expected
    assert loader.load_file(out) == (expected, 0)
    dropped = len(rows) - len(expected)
    assert (f"dropped {dropped} rows" in capsys.readouterr().out) == (dropped > 0)


def test_every_name_works_in_data(tmp_path):
    for name, source in catalog.REGISTRY.items():
        (tmp_path / source.file).write_text(json.dumps([ALPACA_ROW]), encoding="utf-8")
    names = list(catalog.REGISTRY)
    assert catalog.resolve("-".join(names), data_dir=tmp_path) == [tmp_path / catalog.REGISTRY[n].file for n in names]
    assert len(loader.load(",".join(names), data_dir=tmp_path, log=lambda m: None)["output"]) == len(names)


@pytest.mark.parametrize("name", [n for n in HUB if n not in ("alpaca", "belle")])
def test_missing_file_names_it_and_the_command(tmp_path, name):
    with pytest.raises(UserError) as e:
        catalog.resolve(f"{catalog.DATA_DIR / 'demo.json'},{name}", data_dir=tmp_path / "empty")
    assert str(tmp_path / "empty" / ENTRIES[name]["file"]) in str(e.value)
    assert f"python scripts/download_data.py {name}" in str(e.value)


def test_several_names_at_once(tmp_path, local_hub, download_module, monkeypatch):
    serve, calls = local_hub
    monkeypatch.setattr(download_module, "DATA_DIR", tmp_path)
    for name in ("dolly", "firefly"):
        serve(ENTRIES[name]["source"]["hub"], FIXTURES[name][0])
    download_module.main("dolly,firefly")
    assert [c[0] for c in calls] == ["databricks/databricks-dolly-15k", "YeungNLP/firefly-train-1.1M"]
    assert catalog.resolve("dolly-firefly", data_dir=tmp_path) == [tmp_path / "dolly_data.json", tmp_path / "firefly_data.json"]
    with pytest.raises(UserError, match="--out names one file"):
        download_module.main(("dolly", "firefly"), out=str(tmp_path / "x.json"))


def test_real_belle_math_rows_convert(shared_dir, local_hub, download_module, tmp_path):
    """The shared BELLE sample is the head of school_math_0.25M: the catalogue's belle_math entry."""
    serve, _ = local_hub
    rows = json.loads((shared_dir / "data" / "belle_cn.sample.json").read_text(encoding="utf-8"))
    serve("BelleGroup/school_math_0.25M", rows)
    download_module.main("belle_math", out=str(tmp_path / "m.json"))
    assert loader.load_file(tmp_path / "m.json")[0] == loader.load_file(shared_dir / "data" / "belle_cn.sample.json")[0]


def test_real_alpaca_rows_drop_the_empty_outputs(shared_dir, local_hub, download_module, tmp_path, capsys):
    serve, _ = local_hub
    sample = shared_dir / "data" / "alpaca_cleaned.sample.json"
    serve("yahma/alpaca-cleaned", json.loads(sample.read_text(encoding="utf-8")))
    download_module.main("alpaca", out=str(tmp_path / "a.json"))
    kept, skipped = loader.load_file(sample, skip_bad_records=True)
    assert loader.load_file(tmp_path / "a.json") == (kept, 0)
    assert f"dropped {skipped} rows: field 'output' is empty" in capsys.readouterr().out


def test_data_card_renders_every_entry(tiny_llama, tmp_path):
    out = tmp_path / "card.md"
    result = run_python("scripts/data_card.py", "--base_model", tiny_llama, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("| name | language | task | records | license | source | tokens")
    assert len(lines) == 2 + len(ENTRIES)
    demo = next(line for line in lines if line.startswith("| `demo`"))
    assert "42 in file; " in demo  # data/demo.json ships, so it is measured
    assert "`yahma/alpaca-cleaned`" in next(line for line in lines if line.startswith("| `alpaca`"))
    assert "`databricks/databricks-dolly-15k` @ `d8f5e5a`" in next(line for line in lines if line.startswith("| `dolly`"))


def test_readme_data_table_is_the_generated_card():
    """The README's table is data_card.py's output, regenerated whenever the catalogue changes."""
    result = run_python(ROOT / "scripts" / "data_card.py")
    assert result.returncode == 0, result.stderr
    card = result.stdout.strip()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- generated by: python scripts/data_card.py -->\n") + len(
        "<!-- generated by: python scripts/data_card.py -->\n")
    assert readme[start:readme.index("\n\n", start)] == card
