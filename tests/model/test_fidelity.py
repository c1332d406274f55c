"""--recipe 2023 against the 2023 code's tokens, labels, prompt and decoding; and the correctness fixes
of issue 11 (EOS on cut records, lengths, folder names, portable adapters, hub ids, target modules, noise)."""

import logging
import importlib.util
import json
import os
from pathlib import Path

import pytest

from alpaca_cot.train import checkpoints, recipes

from alpaca_cot.model import models
from alpaca_cot.model.adapters import is_hub_adapter, load_adapter, tokenizer_source
from alpaca_cot.cli import UserError
from alpaca_cot.infer.generation import decoding_kwargs
from alpaca_cot.data.preprocess import IGNORE, Prompter, _bos, encode_batch, encode_prompt
from alpaca_cot.train.throughput import CountingCollator
from alpaca_cot.train.finetune import finetune
from conftest import ROOT, run_python


# The 2023 prompts, as PhoebusSi/Alpaca-CoT finetune.py (07b8421) and generate.py (1d819b6) wrote them:
# training ends the prompt with "### Response:\n" + output, generation with "### Response:".
TRAIN_2023 = ("Below is an instruction that describes a task, paired with an input that provides further context. "
              "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
              "### Input:\n{input}\n\n### Response:\n{output}")
TRAIN_2023_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                       "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n{output}")


def prompt_2023(record, output=""):
    template = TRAIN_2023 if record["input"] else TRAIN_2023_NO_INPUT
    text = template.format(instruction=record["instruction"], input=record["input"], output=output)
    return text if output else text[:-1]  # generate.py's prompt: no newline after "### Response:"


def tokenize_2023(tokenizer, record, cutoff=512):
    """The 2023 finetune.py: a tokenizer with add_eos_token=True called with truncation=True,
    max_length=cutoff + 1, padding="max_length", then [:-1]; pad id 0 (unk). Truncation keeps BOS and
    EOS, so the [:-1] drops EOS from a cut record and a pad from one that fits. Then
    DataCollatorForLanguageModeling(mlm=False) set labels = input_ids with every pad (0) position -100."""
    ids = tokenizer(prompt_2023(record, record["output"]))["input_ids"] + [tokenizer.eos_token_id]
    if len(ids) > cutoff + 1:
        ids = ids[:cutoff] + [tokenizer.eos_token_id]
    ids = (ids + [0] * (cutoff + 1 - len(ids)))[:-1]
    return ids, [IGNORE if i == 0 else i for i in ids]


def real_records(shared_dir):
    """Real records: the long ones (over 512 tokens) and short ones, with and without input."""
    data = shared_dir / "data"
    alpaca = json.loads((data / "alpaca_cleaned.sample.json").read_text(encoding="utf-8"))
    belle = json.loads((data / "belle_cn.sample.json").read_text(encoding="utf-8"))
    aqua = json.loads((data / "alpaca_cot_formatted" / "aqua_train.head100.json").read_text(encoding="utf-8"))
    long_alpaca = [r for r in alpaca if len(r["output"]) > 1800]
    return alpaca[:40] + long_alpaca + belle[:120] + aqua[:20]


def columns(records):
    return {k: [r[k] for r in records] for k in ("instruction", "input", "output")}


def test_recipe_2023_tokens_and_labels_equal_the_2023_code(llama_tokenizer, shared_dir, monkeypatch):
    monkeypatch.setattr(llama_tokenizer, "padding_side", "right")  # as finetune sets it, and as 2023 padded
    flags = recipes.apply("2023", "finetune", dict.fromkeys(recipes.RECIPES["2023"]["finetune"]))
    assert flags["train_on_inputs"] and flags["pad_to_cutoff"] and flags["micro_batch_size"] == 4
    records = real_records(shared_dir)
    enc = encode_batch(columns(records), llama_tokenizer, Prompter("alpaca"), 512, flags["train_on_inputs"])
    assert not any(enc["prompt_too_long"])
    batch = CountingCollator(llama_tokenizer, pad_to=512)(
        [{"input_ids": i, "labels": l} for i, l in zip(enc["input_ids"], enc["labels"])])
    cut = 0
    for row, record in enumerate(records):
        ids, labels = tokenize_2023(llama_tokenizer, record)
        assert batch["input_ids"][row].tolist() == ids, row
        assert batch["labels"][row].tolist() == labels, row
        cut += llama_tokenizer.eos_token_id not in ids
    assert cut >= 10  # the long records are in the comparison


def test_legacy_template_is_the_2023_generation_prompt(llama_tokenizer, shared_dir):
    legacy = Prompter(recipes.apply("2023", "generate", {"prompt_template_name": None})["prompt_template_name"])
    for record in real_records(shared_dir)[:60]:
        prompt = legacy.prompt(record["instruction"], record["input"])
        assert prompt == prompt_2023(record)
        assert encode_prompt(llama_tokenizer, prompt) == llama_tokenizer(prompt)["input_ids"]  # BOS, no EOS
        assert Prompter("alpaca").prompt(record["instruction"], record["input"]) == prompt + "\n"


def test_recipe_2023_decoding_and_explicit_flags_win():
    keys = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
            "no_repeat_ngram_size")
    flags = recipes.apply("2023", "generate", dict.fromkeys(keys))
    assert decoding_kwargs(*(flags[k] for k in keys)) == dict(
        max_new_tokens=512, num_beams=4, do_sample=True, temperature=1.0, top_p=0.9, top_k=40,
        repetition_penalty=1.8, no_repeat_ngram_size=6)
    default = recipes.apply(None, "generate", dict.fromkeys(keys))
    assert decoding_kwargs(*(default[k] for k in keys))["do_sample"] is False
    mine = recipes.apply("2023", "finetune", dict(train_on_inputs=False, micro_batch_size=None))
    assert mine == dict(train_on_inputs=False, micro_batch_size=4)
    with pytest.raises(UserError, match="unknown --recipe"):
        recipes.apply("2024", "finetune", {})


def test_recipe_2023_finetune_pads_every_record_to_cutoff(tiny_llama, train_file, tmp_path):
    trainer = finetune(base_model=str(tiny_llama), data=str(train_file), output_dir=str(tmp_path / "a"),
                       recipe="2023", quantization="none", batch_size=8, max_steps=2, cutoff_len=128,
                       val_set_size=0, warmup_steps=1, report_to="none")
    collator = trainer.data_collator
    # every micro-batch is 4 records padded to cutoff_len, and no fewer than two steps' worth were built
    assert collator.padded_tokens % (4 * 128) == 0 and collator.padded_tokens >= 2 * 8 * 128
    assert collator.real_tokens < collator.padded_tokens
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["train_on_inputs"] and run["pad_to_cutoff"] and not run["group_by_length"]
    assert run["micro_batch_size"] == 4 and run["lora_target_modules"] == ["q_proj", "v_proj"]


# ---- EOS on records cut at cutoff_len ----

def test_cut_records_end_without_eos_on_real_long_records(llama_tokenizer, shared_dir):
    records = real_records(shared_dir)
    enc = encode_batch(columns(records), llama_tokenizer, Prompter("alpaca"), 512)
    eos = llama_tokenizer.eos_token_id
    assert sum(enc["truncated"]) >= 10
    for ids, labels, truncated in zip(enc["input_ids"], enc["labels"], enc["truncated"]):
        if truncated:
            assert len(ids) == 512 and eos not in ids and labels[-1] != eos
        else:
            assert ids[-1] == labels[-1] == eos and len(ids) <= 512


# ---- length grouping uses the precomputed column ----

def test_length_column_reaches_the_sampler_unmeasured(tiny_llama, monkeypatch):
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from alpaca_cot.train import resumable
    from alpaca_cot.train.trainer import _training_args

    def measured(*a, **k):
        raise AssertionError("the Trainer measured the rows itself")

    monkeypatch.setattr(transformers.trainer, "LengthGroupedSampler", measured)
    rows = 24
    fake = [(i * 7) % 50 + 1 for i in range(rows)]  # not the rows' real lengths (3 each)
    data = Dataset.from_dict({"input_ids": [[1, 2, 3]] * rows, "labels": [[1, 2, 3]] * rows, "length": fake})
    args = _training_args(output_dir="/tmp/unused", per_device_train_batch_size=4, group_by_length=True,
                          length_column_name="length", use_cpu=True, report_to="none", seed=1, data_seed=1)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    trainer = resumable.trainer_class()(model=model, args=args, train_dataset=data)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, resumable.EpochSeededLengthSampler) and sampler.lengths == fake


# ---- output folders, portable adapters ----

def test_output_folder_names_follow_the_base_model():
    assert checkpoints.default_output_dir("cot", 7) == "saved-cot7b"
    assert checkpoints.default_output_dir("cot", 7, "/models/llama-13b/") == "saved-cot-llama-13b"
    assert checkpoints.default_output_dir("alpaca-cot", 7, "huggyllama/llama-13b") == "saved-alpaca-cot-llama-13b"
    assert checkpoints.default_output_dir("cot", 7, "x/SmolLM2.gguf") == "saved-cot-smollm2"


def load_generate_script():
    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relative_base_saves_a_portable_adapter_that_generate_finds(tiny_llama, train_file, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    (tmp_path / "work").mkdir()
    os.symlink(tiny_llama, tmp_path / "work" / "Tiny-Base")
    monkeypatch.chdir(tmp_path / "work")
    finetune(base_model="Tiny-Base", data=str(train_file), quantization="none", batch_size=4, micro_batch_size=4,
             max_steps=1, cutoff_len=64, val_set_size=0, warmup_steps=0, report_to="none")
    adapter = tmp_path / "work" / "saved-train-tiny-base"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    answer = load_generate_script().main(base_model="Tiny-Base", data=str(train_file), instruction="Hi",
                                         max_new_tokens=2)
    assert answer is None  # printed; the folder was found by the same rule
    monkeypatch.chdir(tmp_path)
    assert AutoPeftModelForCausalLM.from_pretrained(str(adapter)) is not None


# ---- hub ids ----

def test_hub_ids_without_org_and_hub_adapters_resolve():
    assert models.base_model_name(7, "gpt2") == "gpt2"
    assert models.base_model_name(7, "openai-community/gpt2") == "openai-community/gpt2"
    with pytest.raises(UserError, match="not found"):
        models.base_model_name(7, "./missing-model")
    assert is_hub_adapter("someone/alpaca-lora-7b") and tokenizer_source("someone/alpaca-lora-7b", "base") == "base"
    assert not is_hub_adapter("saved-cot7b") and not is_hub_adapter("/abs/adapter") and not is_hub_adapter(None)
    assert not is_hub_adapter("tests/missing")  # tests/ is a local folder: a missing local path, not a hub id


def test_hub_adapter_is_loaded_from_the_hub_not_checked_as_a_folder(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    with pytest.raises(UserError, match="could not load the adapter in someone/adapter"):
        load_adapter(model, "someone/adapter", str(tiny_llama))  # offline here: the hub is asked, not a folder


def test_unreachable_hub_is_one_line_suggesting_offline_mode(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    import urllib.request

    asked, real = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (asked.append(k.get("timeout")), real(*a, **k))[1])
    for args in ((7, None), (7, "gpt2")):
        with pytest.raises(UserError, match="HF_HUB_OFFLINE=1") as error:
            models.base_model_name(*args)
        assert "\n" not in str(error.value)
    assert asked == [5.0, 5.0]  # one request each, with a short timeout: no minute of the hub client's retries


# ---- target modules by architecture ----

def tiny_other(kind: str, folder: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer BLOOM or GPT-2 built from a config, with the LLaMA tokenizer."""
    from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if kind == "bloom":
        model = BloomForCausalLM(BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind, requested, expected", [
    ("bloom", None, {"query_key_value"}),
    ("gpt2", "all-linear", {"c_attn", "c_proj", "c_fc"}),
])
def test_non_llama_bases_train_and_save(kind, requested, expected, tiny_llama, train_file, tmp_path):
    from safetensors.torch import load_file

    base = tiny_other(kind, tmp_path / kind, tiny_llama)
    out = tmp_path / "adapter"
    finetune(base_model=str(base), data=str(train_file), output_dir=str(out), quantization="none", batch_size=4,
             micro_batch_size=4, max_steps=2, cutoff_len=64, val_set_size=0, warmup_steps=0, report_to="none",
             lora_target_modules=requested)
    saved = {k.split(".")[-3] for k in load_file(out / "adapter_model.safetensors")}
    assert saved == expected


def test_unknown_target_module_fails_before_loading(tiny_llama, train_file, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(UserError) as error:
        finetune(base_model=str(tiny_llama), data=str(train_file), output_dir=str(tmp_path / "a"),
                 quantization="none", lora_target_modules="q_proj,bogus_proj", val_set_size=0, report_to="none")
    assert str(error.value).startswith("--lora_target_modules bogus_proj: no such module") and "\n" not in str(error.value)
    assert not (tmp_path / "a").exists()


# ---- BOS ----

class FakeTokenizer:
    def __init__(self, bos, eos, adds_bos):
        self.bos_token_id, self.eos_token_id, self.adds_bos = bos, eos, adds_bos

    def __call__(self, text):
        return {"input_ids": ([self.bos_token_id] if self.adds_bos else []) + [7]}


def test_bos_only_when_the_tokenizer_adds_its_own(llama_tokenizer):
    assert _bos(llama_tokenizer) == [1]
    assert _bos(FakeTokenizer(None, 2, False)) == []
    assert _bos(FakeTokenizer(5, 5, True)) == []  # BOS is EOS (GPT-2 style)
    assert _bos(FakeTokenizer(5, 2, False)) == []  # a BOS the tokenizer never adds (SmolLM2)


# ---- noise ----

def test_a_normal_run_prints_no_spurious_warnings(tiny_llama, train_file, tmp_path):
    proc = run_python("finetune.py", "--base_model", tiny_llama, "--data", train_file, "--output_dir", tmp_path / "a",
                      "--quantization", "none", "--batch_size", "4", "--micro_batch_size", "4", "--max_steps", "2",
                      "--cutoff_len", "64", "--val_set_size", "0", "--gradient_checkpointing", "True",
                      "--report_to", "none", env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for noise in ("new PAD/BOS/EOS", "FutureWarning", "is_gradient_checkpointing"):
        assert noise not in text, noise
    assert "speed: \n" not in text and not any(line.strip() == "speed:" for line in text.splitlines())


def test_no_speed_line_when_nothing_was_measured(tmp_path, capsys):
    checkpoints.write_summary(tmp_path, {}, [], {}, seconds=1.0)
    assert "speed:" not in capsys.readouterr().out


def test_liger_noise_is_dropped_and_other_warnings_kept(caplog):
    from alpaca_cot.model import kernels

    kernels.quiet_liger()
    logger = logging.getLogger("liger_kernel.backends.registry")
    config = logging.getLogger("transformers.configuration_utils")
    with caplog.at_level(logging.WARNING):
        logger.warning("Backend impl '%s' for op '%s' could not be imported: %s", "x._cutedsl.rope", "rope", "ImportError")
        logger.warning("a kernel failed")
        config.warning("`use_return_dict` is deprecated! Use `return_dict` instead!")
        config.warning("`torch_dtype` is deprecated! Use `dtype` instead!")
    assert [r.getMessage() for r in caplog.records] == ["a kernel failed",
                                                        "`torch_dtype` is deprecated! Use `dtype` instead!"]
