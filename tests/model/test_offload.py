"""--offload_activations: the checkpointed layer inputs leave the device between forward and backward and come
back for it. On the CPU the hooks "offload" by copying, so that what they catch and what they give back is
checked here; the copies on CUDA streams run in the GPU benchmark (benchmarks/README.md)."""

import copy

import pytest
import torch

from alpaca_cot.model import models, offload
from alpaca_cot.cli import UserError


@pytest.fixture()
def checkpointed_pair(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(str(tiny_llama))
    base.config.use_cache = False
    models.enable_checkpointing(base)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                            init_lora_weights="gaussian"))
    model.train()
    return model, copy.deepcopy(model)


def lora_grads(model, ids):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_offloaded_layer_inputs_give_the_same_loss_and_gradients(checkpointed_pair):
    offloaded, plain = checkpointed_pair
    hooks = offload.offload_activations(offloaded, gradient_checkpointing=True, min_bytes=0)
    layers = offloaded.config.num_hidden_layers
    for length in (16, 40):
        ids = torch.randint(3, 1000, (2, length), generator=torch.Generator().manual_seed(length))
        before = hooks.offloaded
        got_loss, got = lora_grads(offloaded, ids)
        want_loss, want = lora_grads(plain, ids)
        assert torch.equal(got_loss, want_loss)
        assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)
        # every checkpointed layer's input went through the hooks (parameters do not)
        assert hooks.offloaded - before >= layers


def test_parameters_and_small_tensors_stay_where_they_are(checkpointed_pair):
    model, _ = checkpointed_pair
    hooks = offload.OffloadedActivations(model, min_bytes=1 << 10)
    weight = next(p for p in model.parameters())
    assert hooks._pack(weight) is weight
    small = torch.ones(4)
    assert hooks._pack(small) is small
    big = torch.arange(1024.0)
    held = hooks._pack(big)
    assert held is not big and torch.equal(hooks._unpack(held), big)
    assert torch.equal(hooks._unpack(held), big), "a tensor read twice is fetched again"


def test_offloading_needs_checkpointing(checkpointed_pair):
    with pytest.raises(UserError, match="needs --gradient_checkpointing"):
        offload.offload_activations(checkpointed_pair[0], gradient_checkpointing=False)


def test_finetune_refuses_it_without_checkpointing_before_loading(tiny_llama, train_file, tmp_path, monkeypatch):
    from conftest import small_run

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UserError, match="--offload_activations .* needs --gradient_checkpointing"):
        small_run(tiny_llama, train_file, tmp_path / "a", max_steps=1, gradient_checkpointing=False,
                  offload_activations=True)
    assert not (tmp_path / "a").exists()


def test_finetune_trains_with_the_hooks_on_its_model(tiny_llama, train_file, tmp_path, monkeypatch):
    from conftest import small_run

    installed = []
    real = offload.offload_activations
    monkeypatch.setattr(offload, "offload_activations",
                        lambda m, ckpt: installed.append(real(m, ckpt, min_bytes=0)) or installed[-1])
    trainer = small_run(tiny_llama, train_file, tmp_path / "a", max_steps=2, gradient_checkpointing=True,
                        offload_activations=True)
    assert len(installed) == 1 and installed[0].offloaded > 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file() and trainer.state.global_step == 2
