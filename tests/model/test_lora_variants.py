"""peft's LoRA variants through finetune: --use_dora, --use_rslora, --init_lora_weights pissa (saved converted,
so that it applies to the unchanged base), each trained on the tiny LLaMA and reloaded as generate does; the
streaming export merges what it can reproduce and refuses DoRA."""

import json

import pytest
import torch

from alpaca_cot.cli import UserError
from alpaca_cot.train.finetune import finetune
from conftest import logits, small_run
from conftest import load_export_script


def reloaded(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter)).eval()


@pytest.mark.parametrize("variant", [{"use_dora": True}, {"use_rslora": True}, {"init_lora_weights": "pissa_niter_4"}])
def test_a_variant_trains_and_reloads_onto_the_unchanged_base(variant, tiny_llama, train_file, llama_tokenizer, tmp_path):
    trainer = small_run(tiny_llama, train_file, tmp_path / "a", max_steps=4, learning_rate=1e-2, **variant)
    trained = logits(trainer.model.eval(), llama_tokenizer)
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert all(run[k] == v for k, v in variant.items())
    model = reloaded(tiny_llama, tmp_path / "a")
    again = logits(model, llama_tokenizer)
    assert torch.allclose(trained, again, atol=1e-4), (trained - again).abs().max()
    with model.disable_adapter():
        untouched = logits(model, llama_tokenizer)
    assert not torch.allclose(again, untouched, atol=1e-4), "the adapter changes nothing"
    if "init_lora_weights" in variant:  # converted to a plain LoRA of twice the rank, against the original base
        assert config["r"] == 16 and config["init_lora_weights"] is True
        assert not (tmp_path / "a" / "initial_adapter").exists()
    if variant.get("use_dora"):
        with pytest.raises(UserError, match="DoRA"):
            load_export_script().main(base_model=str(tiny_llama), lora_weights=str(tmp_path / "a"), out=str(tmp_path / "m"))
    else:
        export = load_export_script()
        export.main(base_model=str(tiny_llama), lora_weights=str(tmp_path / "a"), out=str(tmp_path / "m"))
        from transformers import AutoModelForCausalLM

        merged = logits(AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).eval(), llama_tokenizer)
        assert torch.allclose(merged, again, atol=1e-4)


@pytest.mark.parametrize("flags,message", [
    ({"init_lora_weights": "pissa", "quantization": "4bit"}, "cannot hold exactly"),
    ({"init_lora_weights": "svd"}, "must be one of default, gaussian, olora, pissa or pissa_niter_N"),
    ({"use_dora": "yes"}, "--use_dora must be True or False"),
    ({"use_dora": True, "quantization": "8bit"}, "does not train on an 8-bit base"),
])
def test_bad_variants_are_one_line_before_loading(flags, message, tiny_llama, train_file, tmp_path):
    base = dict(base_model=str(tiny_llama), data=str(train_file), output_dir=str(tmp_path / "o"), max_steps=1,
                report_to="none")
    with pytest.raises(UserError, match=message):
        finetune(**{**base, "quantization": "none", **flags})
    assert not (tmp_path / "o").exists()
