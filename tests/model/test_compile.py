"""--compile_layers: each decoder layer compiled on its own with dynamic shapes. On the CPU with dynamo's
aot_eager backend (the graphs traced and run, without inductor's code generation): the same loss and LoRA
gradients as eager, layers sharing their graphs, and no new compilation for later padded lengths."""

import copy

import pytest
import torch

from alpaca_cot.model import kernels


@pytest.fixture()
def lora_pair(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tiny_llama)),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights="gaussian"))
    return model, copy.deepcopy(model)


def test_compiled_layers_match_eager_and_do_not_recompile_per_length(lora_pair):
    import torch._dynamo

    compiled, eager = lora_pair
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    kernels.compile_layers(compiled, backend="aot_eager")
    graphs = []
    for length in (16, 24, 40):
        ids = torch.randint(3, 1000, (2, length), generator=torch.Generator().manual_seed(length))
        for model in (compiled, eager):
            model.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
        got = {n: p.grad for n, p in compiled.named_parameters() if p.requires_grad}
        want = {n: p.grad for n, p in eager.named_parameters() if p.requires_grad}
        assert all(torch.allclose(got[n], want[n], atol=1e-6) for n in want)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[2] == graphs[1], f"compiled graphs after each length: {graphs}"
    assert graphs[1] <= 2 * 2, "the two layers share their graphs (one static, one dynamic)"


def test_decoder_layers_are_found_or_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    assert len(kernels.decoder_layers(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2)))) == 3
    from alpaca_cot.cli import UserError

    with pytest.raises(UserError, match="no decoder layers"):
        kernels.decoder_layers(torch.nn.Linear(2, 2))


def test_finetune_compiles_the_layers_of_the_model_it_trains(tiny_llama, train_file, tmp_path, monkeypatch):
    from conftest import small_run

    compiled = []  # what compiling does is the test above's; here: that finetune compiles the model it trains
    monkeypatch.setattr(kernels, "compile_layers", lambda m: compiled.append(m) or m)
    trainer = small_run(tiny_llama, train_file, tmp_path / "a", max_steps=1, compile_layers=True)
    assert compiled == [trainer.model] and (tmp_path / "a" / "adapter_model.safetensors").is_file()
