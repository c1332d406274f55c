"""generate.py and scripts/export_hf_checkpoint.py on a tiny LLaMA with the real tokenizer (CPU).

One adapter, trained here for 30 steps on real Alpaca records with short answers (so that the
model learns to emit EOS), serves every test. Its answers are gibberish, some of them empty, so
a test that needs some text picks its prompt among candidates. The command lines run as
subprocesses and are compared with `Generator` in this process: greedy decoding is
deterministic, and sampling is too once the seed is fixed. Generation lengths stay tiny.
"""

import importlib.util
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

from alpaca_cot.infer import answer as answering
from alpaca_cot.cli import UserError
from alpaca_cot.infer.generation import COT_TRIGGER, Generator, decoding_kwargs, with_cot
from alpaca_cot.train.finetune import finetune
from conftest import ALL_LINEAR, ROOT, load_export_script, logits, only_error, run_python

GREEDY = decoding_kwargs(max_new_tokens=8)
SAMPLING = decoding_kwargs(max_new_tokens=8, temperature=0.8, top_p=0.9)
# Inputs that a command line parser could take for Python literals (a tuple, a list, None).
LITERAL_INPUTS = [("Classify these fruits by color.", "apple, banana, cherry"), ("Sort these numbers.", "3, 1, 2"),
                  ("Find the odd one out.", "[red, green, seven]"), ("Fill in the blank.", "None"),
                  ("Which one is a vegetable?", "carrot, apple")]
# Instructions (and inputs) whose prompts differ clearly in length.
PROMPTS = [
    ("Hi", ""),
    ("Name three primary colors.", ""),
    ("Classify these fruits by color.", "apple, banana, cherry"),
    ("Rewrite the sentence in the passive voice.", "The cat chased the mouse across the kitchen floor."),
    ("Write a long story about a dragon who learns to fly over the tall mountains of the north, "
     "with many details about every friend he meets on the way.", ""),
    ("Summarize the paragraph in one sentence.", "The city council met on Tuesday to discuss the new park. "
     "After hours of debate about costs, trees, playgrounds and parking, the members voted to fund it."),
]


# Tiny matrices: one thread is faster, and 10x faster while another process shares the cores.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_records(shared_dir) -> list[dict]:
    """Real Alpaca records whose answers are 2 to 20 words long: the model learns to stop."""
    records = json.loads((shared_dir / "data" / "alpaca_cleaned.sample.json").read_text(encoding="utf-8"))
    return [r for r in records if 2 <= len(r["output"].split()) <= 20]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama, train_records) -> Path:
    folder = tmp_path_factory.mktemp("generate")
    data = folder / "short_answers.json"
    # 48 records, about 2.5 passes in 30 steps: enough for the tiny model to learn where answers end.
    data.write_text(json.dumps(train_records[:48], ensure_ascii=False), encoding="utf-8")
    finetune(base_model=str(tiny_llama), data=str(data), output_dir=str(folder / "adapter"), quantization="none",
             batch_size=4, micro_batch_size=4, max_steps=30, learning_rate=2e-2, cutoff_len=128, val_set_size=0,
             warmup_steps=2, save_steps=1000, logging_steps=10, report_to="none", lora_target_modules=ALL_LINEAR)
    return folder / "adapter"


@pytest.fixture(scope="module")
def gen(tiny_llama, adapter) -> Generator:
    return Generator(str(tiny_llama), str(adapter))


@pytest.fixture(scope="module")
def other_base(tmp_path_factory, llama_tokenizer_model) -> Path:
    """A tiny LLaMA of another width: the adapter above cannot fit it."""
    from alpaca_cot.model import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-llama-32"), tokenizer_model=llama_tokenizer_model, hidden_size=32)


def answer(gen, instruction, input="", cot=False, **decoding):
    return gen.generate([gen.prompt(instruction, input, cot)], **(decoding or GREEDY))[0]


def answered(gen, candidates) -> tuple[str, str, str]:
    """The first (instruction, input) of candidates that the model answers with some text, and the answer."""
    for instruction, input in candidates:
        got = answer(gen, instruction, input)
        if got:
            return instruction, input, got
    pytest.fail("premise: the tiny model answers none of the candidate prompts with any text")


def new_ids(gen, prompts, **decoding) -> list[list[int]]:
    """Ids generated after each (left-padded) prompt, up to and including the first EOS."""
    batch = gen._batch(prompts)
    with torch.inference_mode():
        out = gen.model.generate(**batch, **decoding)[:, batch["input_ids"].shape[1]:]
    eos = gen.tokenizer.eos_token_id
    return [row[:row.index(eos) + 1] if eos in row else row for row in out.tolist()]


def run_script(script, *args, stdin=None, env=None):
    env = dict(env or os.environ, OMP_NUM_THREADS="1")  # as in this process: same speed, same sums
    return run_python(script, *args, stdin=stdin, env=env)


def run_generate(tiny_llama, adapter, *args, **kwargs):
    return run_script("generate.py", "--base_model", tiny_llama, "--lora_weights", adapter, *args, **kwargs)


# ---- one answer ----

def test_instruction_mode_prints_the_in_process_answer(gen, tiny_llama, adapter):
    # "apple, banana, cherry" is also a Python tuple: the command line must pass it on as text.
    instruction, input, expected = answered(gen, LITERAL_INPUTS)
    proc = run_generate(tiny_llama, adapter, "--instruction", instruction, "--input", input, "--max_new_tokens", 8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == expected + "\n"


def test_batched_greedy_equals_one_by_one(gen):
    prompts = [gen.prompt(i, x) for i, x in PROMPTS]
    batch = gen._batch(prompts)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == len(prompts) and max(lengths) - min(lengths) > 40
    assert batch["attention_mask"][lengths.index(min(lengths)), 0] == 0  # padded on the left
    decoding = decoding_kwargs(max_new_tokens=12)
    assert gen.generate(prompts, **decoding) == [gen.generate([p], **decoding)[0] for p in prompts]
    assert new_ids(gen, prompts, **decoding) == [new_ids(gen, [p], **decoding)[0] for p in prompts]


def test_answer_is_cut_by_ids_after_the_prompt(gen):
    # A text split on "### Response:" would return the end of this instruction as the answer.
    instruction = "Explain what the line ### Response: does in this template."
    got = answer(gen, instruction)
    ids = new_ids(gen, [gen.prompt(instruction)], **GREEDY)[0]
    assert got == gen.tokenizer.decode(ids, skip_special_tokens=True).strip()
    for prompt_text in ("### Response", "### Instruction", "Below is an instruction", "does in this template"):
        assert prompt_text not in got


def test_generation_stops_at_eos(gen, train_records):
    limit, eos = 40, gen.tokenizer.eos_token_id
    prompts = [gen.prompt(r["instruction"], r["input"]) for r in train_records[:48]]
    batch = new_ids(gen, prompts, **decoding_kwargs(max_new_tokens=limit))
    stopped = [p for p, ids in zip(prompts, batch) if ids[-1] == eos]
    assert stopped, "the trained model should end some answers from its training data with EOS"
    ids = new_ids(gen, stopped[:1], **decoding_kwargs(max_new_tokens=limit))[0]
    assert ids[-1] == eos and len(ids) < limit  # ended by EOS, not by the limit
    got = gen.generate(stopped[:1], **decoding_kwargs(max_new_tokens=limit))[0]
    assert got == gen.tokenizer.decode(ids[:-1]).strip()
    assert "</s>" not in got and len(gen.tokenizer(got, add_special_tokens=False)["input_ids"]) < limit


# ---- files ----

def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_input_file_json_and_jsonl(gen, tiny_llama, adapter, train_records, tmp_path):
    records = [dict(r) for r in train_records[10:15]]
    del records[1]["output"]
    records[3]["output"] = ""
    (tmp_path / "questions.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    proc = run_generate(tiny_llama, adapter, "--input_file", tmp_path / "questions.json", "--output_file",
                        tmp_path / "by2.jsonl", "--batch_size", 2, "--max_new_tokens", 6)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"answering: 100%.*3/3", proc.stderr)  # the progress bar counts batches
    by2 = read_jsonl(tmp_path / "by2.jsonl")
    assert len(by2) == 5
    for row, record in zip(by2, records):
        assert (row["instruction"], row["input"]) == (record["instruction"], record["input"])
        assert isinstance(row["output"], str)
        assert row.get("reference") == (record.get("output") or None)
        assert set(row) == {"instruction", "input", "output"} | ({"reference"} if record.get("output") else set())
    # The .jsonl file, in this process, one record at a time, to the default output name.
    jsonl = tmp_path / "questions.jsonl"
    answering.answer_file(gen, answering.read_records(jsonl), jsonl, None, 1, False, decoding_kwargs(max_new_tokens=6))
    assert read_jsonl(tmp_path / "questions.answers.jsonl") == by2
    assert {p.name for p in tmp_path.iterdir()} == {"questions.json", "questions.jsonl", "by2.jsonl",
                                                     "questions.answers.jsonl"}


# ---- interactive, chain of thought, sampling, beams ----

def test_interactive_streams_the_greedy_answer(gen, tiny_llama, adapter):
    instruction, _, expected = answered(gen, [(i, "") for i, _ in PROMPTS])
    proc = run_generate(tiny_llama, adapter, "--max_new_tokens", 8, stdin=f"{instruction}\n\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    streamed = re.search(r"### Response: (.*?)\n\n### Instruction: $", proc.stdout, re.S)
    assert streamed, proc.stdout
    assert streamed.group(1).strip() == expected


def test_stream_fails_instead_of_hanging(gen):
    # Streaming cannot run beam search: the error in the worker thread must reach the caller.
    errors = []

    def consume():
        try:
            list(gen.stream(gen.prompt("Hi"), **decoding_kwargs(max_new_tokens=4, num_beams=2)))
        except ValueError as e:
            errors.append(e)

    caller = threading.Thread(target=consume, daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "stream() waits forever when generation fails"
    assert errors and "beam" in str(errors[0])


def test_cot_trigger_ends_the_instruction(gen):
    prompt = gen.prompt("Is the sky blue?", cot=True)
    assert f"### Instruction:\nIs the sky blue? {COT_TRIGGER}\n\n### Response:\n" in prompt
    assert prompt == gen.prompt(with_cot("Is the sky blue?  "))
    assert COT_TRIGGER not in gen.prompt("Is the sky blue?")


def sample(gen, instruction, seed, cot=False, decoding=SAMPLING):
    torch.manual_seed(seed)
    return answer(gen, instruction, cot=cot, **decoding)


def test_cli_cot_and_seed(gen, tiny_llama, adapter):
    # Sampled tokens hang on the exact prompt: the flag shows in the answer.
    instruction = PROMPTS[1][0]
    expected = sample(gen, instruction, seed=1, cot=True)
    assert expected != sample(gen, instruction, seed=1), "premise: the trigger changes the sampled answer"
    proc = run_generate(tiny_llama, adapter, "--instruction", instruction, "--cot", "--temperature", 0.8,
                        "--top_p", 0.9, "--seed", 1, "--max_new_tokens", 8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == expected + "\n"


def test_sampling_is_reproducible_and_beams_run(gen):
    instructions = [i for i, _ in PROMPTS]
    first = [sample(gen, i, seed=1) for i in instructions]
    assert [sample(gen, i, seed=1) for i in instructions] == first
    assert [sample(gen, i, seed=2) for i in instructions] != first
    assert first != [answer(gen, i) for i in instructions]  # sampling is not greedy
    beams = decoding_kwargs(max_new_tokens=8, num_beams=2)
    prompts = [gen.prompt(i, x) for i, x in PROMPTS]
    got = gen.generate(prompts, **beams)
    assert len(got) == len(prompts) and all(isinstance(a, str) for a in got)
    assert gen.generate(prompts, **beams) == got


# ---- web ----

def test_web_answer_matches_generate(gen):
    instruction, input = PROMPTS[2]
    assert answering.web_answer(gen, instruction, input, max_new_tokens=8) == answer(gen, instruction, input)
    assert answering.web_answer(gen, "   ", max_new_tokens=8).startswith("error:")
    assert answering.web_answer(gen, "Hi", max_new_tokens=0).startswith("error:")


def test_web_without_gradio_is_one_line(tiny_llama, adapter, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "gradio.py").write_text("raise ImportError('No module named gradio')\n")
    proc = run_generate(tiny_llama, adapter, "--web", env=dict(os.environ, PYTHONPATH=str(fake)))
    only_error(proc, "--web", "gradio")


# ---- bad input: one line, no traceback, no file ----

# case: (flags on top of --base_model {base} --lora_weights {adapter}, words the error line must name)
BAD_INPUTS = {
    "missing adapter": ({"--lora_weights": "{tmp}/no-adapter", "--instruction": "Hi"}, ["{tmp}/no-adapter"]),
    "adapter of another base": ({"--base_model": "{other}", "--instruction": "Hi"}, ["does not fit", "{other}"]),
    "empty instruction": ({"--instruction": ""}, ["--instruction", "empty"]),
    "invalid JSON": ({"--input_file": "{tmp}/broken.json"}, ["{tmp}/broken.json", "not valid JSON"]),
    "non-string instruction": ({"--input_file": "{tmp}/bad.jsonl"}, ["{tmp}/bad.jsonl", "line 2", "'instruction'"]),
    "missing input file": ({"--input_file": "{tmp}/none.json"}, ["{tmp}/none.json", "not found"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_writes_nothing(case, tiny_llama, adapter, other_base, tmp_path):
    (tmp_path / "broken.json").write_text('[{"instruction": "Hi",}]')
    (tmp_path / "bad.jsonl").write_text('{"instruction": "Hi"}\n{"instruction": 5}\n')
    before = set(tmp_path.iterdir())
    flags, words = BAD_INPUTS[case]
    fill = dict(tmp=tmp_path, other=other_base, base=tiny_llama, adapter=adapter)
    flags = {"--base_model": "{base}", "--lora_weights": "{adapter}", **flags, "--output_file": "{tmp}/out.jsonl"}
    proc = run_script("generate.py", *[x.format(**fill) for pair in flags.items() for x in pair])
    only_error(proc, *[w.format(**fill) for w in words])
    assert set(tmp_path.iterdir()) == before  # no answers file, no temp file


# ---- export ----

def run_export(tiny_llama, adapter, out, *args):
    return run_script("scripts/export_hf_checkpoint.py", "--base_model", tiny_llama, "--lora_weights", adapter,
                      "--out", out, *args)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_llama, adapter) -> Path:
    out = tmp_path_factory.mktemp("export") / "merged"
    proc = run_export(tiny_llama, adapter, out, "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def unmerged(tiny_llama, adapter) -> Generator:
    return Generator(str(tiny_llama), str(adapter), merge=False)


def test_merged_default_answers_as_the_unmerged_adapter(gen, unmerged):
    from peft import PeftModel

    assert not isinstance(gen.model, PeftModel) and isinstance(unmerged.model, PeftModel)
    prompts = [gen.prompt(*p) for p in PROMPTS]
    assert gen.generate(prompts, **GREEDY) == unmerged.generate(prompts, **GREEDY)


def test_export_round_trip(exported, unmerged, llama_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gen = unmerged

    merged = AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    assert merged.dtype == torch.float32 and not (exported / "adapter_config.json").exists()
    assert list(exported.glob("*.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(str(exported))
    text = gen.prompt(*PROMPTS[3])
    assert tokenizer(text)["input_ids"] == llama_tokenizer(text)["input_ids"]
    want = logits(gen.model, gen.tokenizer, text)
    # W + BA is rounded once to fp32 in the merge: about 2e-5 on logits of about 10.
    assert (logits(merged, tokenizer, text) - want).abs().max() < 1e-4
    with gen.model.disable_adapter():  # the adapter matters: the base alone is far off
        assert (logits(gen.model, gen.tokenizer, text) - want).abs().max() > 1e-2
    assert sorted(p.name for p in exported.parent.iterdir()) == ["merged"]  # no temp folder left


def test_export_refuses_an_existing_folder_unless_overwrite(exported, tiny_llama, adapter, tmp_path):
    out = tmp_path / "merged"
    shutil.copytree(exported, out)
    weights = next(out.glob("*.safetensors"))
    before = weights.read_bytes()
    only_error(run_export(tiny_llama, adapter, out), str(out), "--overwrite")
    assert weights.read_bytes() == before
    (out / "stale.txt").write_text("from an older export")
    load_export_script().main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out),
                              dtype="bfloat16", overwrite=True)
    assert not (out / "stale.txt").exists()  # replaced as a whole
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp or old folder left


def test_export_bad_input(tiny_llama, adapter, other_base, tmp_path):
    out = tmp_path / "merged"
    only_error(run_export(tiny_llama, tmp_path / "no-adapter", out), str(tmp_path / "no-adapter"))
    export = load_export_script()
    with pytest.raises(UserError, match="does not fit"):
        export.main(base_model=str(other_base), lora_weights=str(adapter), out=str(out))
    with pytest.raises(UserError, match="never quantized"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out), quantization="8bit")
    with pytest.raises(UserError, match="--dtype"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out), dtype="int3")
    with pytest.raises(UserError, match="is the input --lora_weights"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(adapter), overwrite=True)
    assert list(tmp_path.iterdir()) == []  # no out folder, no temp folder


def test_export_failing_midway_leaves_the_folder_as_it_was(tiny_llama, adapter, tmp_path, monkeypatch):
    export = load_export_script()

    class DiskFull:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{")  # half-written
            raise OSError("No space left on device")

    from alpaca_cot.model import models

    monkeypatch.setattr(models, "load_tokenizer", lambda name: DiskFull())
    out = tmp_path / "merged"
    with pytest.raises(UserError, match=f"{out}: could not write it \\(No space left on device\\)"):  # one line
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out))
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "model.safetensors").write_text("an older export")
    (out / export.MARKER).write_text("{}")  # --overwrite replaces only a previous export
    with pytest.raises(UserError, match="No space"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
    assert sorted(p.name for p in out.iterdir()) == [export.MARKER, "model.safetensors"]
    assert (out / "model.safetensors").read_text() == "an older export"


def test_static_cache_path_answers_as_the_default(gen, tiny_llama, adapter):
    """compile=True (long --input_file runs on a GPU): prompts padded to a multiple of 64, static KV cache."""
    fast = Generator(str(tiny_llama), str(adapter), compile=True)
    batch = fast._batch([fast.prompt(*PROMPTS[0])])
    assert batch["input_ids"].shape[1] % 64 == 0
    prompts = [gen.prompt(*p) for p in PROMPTS]
    assert fast.generate(prompts, **GREEDY) == gen.generate(prompts, **GREEDY)


def test_compile_only_for_long_file_runs_on_a_gpu(monkeypatch):
    records = [{}] * 100
    assert not answering.worth_compiling(records, 8, 512, "none")  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert answering.worth_compiling(records, 8, 512, "none")  # 13 batches x 512 steps
    assert not answering.worth_compiling(records, 8, 128, "none")  # 13 x 128: compiling would not pay
    assert not answering.worth_compiling(records, 8, 512, "8bit")
    assert not answering.worth_compiling(None, 8, 512, "none")  # one prompt, interactive, web


def test_interactive_keeps_the_conversation(gen, monkeypatch, capsys):
    """The second answer sees the first turn, rendered as multi-turn training renders it; /new forgets it."""
    from alpaca_cot.data import preprocess

    said = iter(["What are the three primary colors?", "Name one more.", "/new", "Name one more.", ""])
    monkeypatch.setattr("builtins.input", lambda prompt: next(said))
    seen = []
    stream = gen.stream
    monkeypatch.setattr(gen, "stream", lambda prompt, **kw: (seen.append(prompt), stream(prompt, **kw))[1])
    answering.interactive(gen, False, decoding_kwargs(max_new_tokens=6))
    assert len(seen) == 3
    first_answer = capsys.readouterr().out.split("### Response: ")[1].splitlines()[0]
    history = [["What are the three primary colors?", gen.prompter.answer(first_answer)]]
    assert seen[1] == preprocess.prompt_ids(gen.tokenizer, gen.prompter, history, "Name one more.")
    assert seen[1][:len(seen[0])] == seen[0] and len(seen[1]) > len(seen[0])  # the first turn, then more
    assert seen[2] == preprocess.prompt_ids(gen.tokenizer, gen.prompter, [], "Name one more.")
    assert seen[0] == gen.ids(gen.prompt("What are the three primary colors?"))  # one turn: as in every mode


def test_device_map_auto_answers_as_the_default(gen, tiny_llama, adapter):
    """--device_map auto (layers spread by accelerate; here all on the CPU) answers as the default placement."""
    split = Generator(str(tiny_llama), str(adapter), device_map="auto")
    prompts = [gen.prompt("Name a primary color."), gen.prompt("What is 2 + 2?")]
    assert split.generate(prompts, **GREEDY) == gen.generate(prompts, **GREEDY)
    proc = run_generate(tiny_llama, adapter, "--instruction", "hi", "--device_map", "gpu0")
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "error: unknown --device_map 'gpu0'; choose cpu or auto (or leave it out)"
