"""finetune --method full: every weight trained, the output folder a whole model saved as a unit, which
generate.py loads as its base, resume continues it to the same weights, and the export refuses it."""

import json

import pytest
import torch

from alpaca_cot.cli import UserError
from alpaca_cot.train.finetune import finetune
from conftest import logits, small_run
from conftest import load_export_script

FULL = dict(method="full", lora_target_modules=None, learning_rate=1e-3, max_steps=4, batch_size=4, micro_batch_size=2)


def weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_trains_every_weight_and_saves_a_model_generate_loads(tiny_llama, train_file, llama_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from alpaca_cot.infer.generation import Generator

    trainer = small_run(tiny_llama, train_file, tmp_path / "full", **FULL)
    folder = tmp_path / "full"
    assert not (folder / "adapter_config.json").exists() and (folder / "config.json").is_file()
    assert json.loads((folder / "run.json").read_text())["method"] == "full"
    before = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).state_dict()
    after = weights(folder)
    changed = [k for k, v in after.items() if not torch.equal(v, before[k])]
    assert any("mlp" in k for k in changed) and any("embed_tokens" in k for k in changed)
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert torch.allclose(logits(reloaded, llama_tokenizer), logits(trainer.model.eval(), llama_tokenizer), atol=1e-5)
    gen = Generator(str(tiny_llama), str(folder))  # the folder is the base; no adapter
    assert gen.model.name_or_path == str(folder.resolve())
    assert isinstance(gen.generate([gen.prompt("Hi")], max_new_tokens=3, do_sample=False, num_beams=1)[0], str)
    with pytest.raises(UserError, match="holds a fully tuned model"):
        load_export_script().main(base_model=str(tiny_llama), lora_weights=str(folder), out=str(tmp_path / "m"))


def test_a_resumed_full_run_ends_with_the_same_weights(tiny_llama, train_file, tmp_path, capsys):
    import shutil

    folder = tmp_path / "full"
    small_run(tiny_llama, train_file, folder, **dict(FULL, save_steps=2))
    uninterrupted = weights(folder)
    shutil.rmtree(folder / "checkpoint-4")  # as if killed after the checkpoint at step 2
    (folder / "model.safetensors").unlink()
    capsys.readouterr()
    small_run(tiny_llama, train_file, folder, **dict(FULL, save_steps=2), resume_from_checkpoint="auto")
    assert f"resuming from {folder / 'checkpoint-2'}" in capsys.readouterr().out
    resumed = weights(folder)
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


@pytest.mark.parametrize("flags,message", [
    ({"quantization": "4bit"}, "--quantization none"),
    ({"quantization": "none", "use_dora": True}, "LoRA options, but --method full trains no adapter"),
    ({"quantization": "none", "method": "half"}, "--method must be one of lora, full"),
])
def test_what_full_finetuning_cannot_do_is_one_line(flags, message, tiny_llama, train_file, tmp_path):
    with pytest.raises(UserError, match=message):
        finetune(**{"base_model": str(tiny_llama), "data": str(train_file), "output_dir": str(tmp_path / "o"),
                    "max_steps": 1, "report_to": "none", "method": "full", **flags})
    assert not (tmp_path / "o").exists()
