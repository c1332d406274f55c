"""The streaming merge (alpaca_cot/model/merge.py) against peft's merge_and_unload, on tiny random models (CPU).

Adapters are fabricated with random lora_A and lora_B (a trained adapter's B is non-zero too; peft
initialises B to zero, which would make every merge look right)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from alpaca_cot.model import merge
from alpaca_cot.cli import UserError
from conftest import load_export_script

QV = ["q_proj", "v_proj"]


def make_adapter(base: Path, folder: Path, seed=0, **lora):
    """Save a LoRA adapter with random A and B for base into folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                           LoraConfig(task_type="CAUSAL_LM", **lora))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    model.save_pretrained(str(folder))
    return folder


def peft_merged(base: Path, adapter: Path, dtype=torch.float32) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().state_dict()


def loaded(folder: Path, dtype=torch.float32) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).state_dict()


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def changed(base: dict, merged: dict) -> set[str]:
    return {k for k in base if not torch.equal(base[k], merged[k])}


def stream(base, adapter, out, dtype=None):
    out.mkdir()
    return merge.merge_checkpoint(base, adapter, out, dtype)


@pytest.fixture(scope="module")
def sharded_llama(tiny_llama, tmp_path_factory) -> Path:
    """The tiny LLaMA saved in several safetensors files plus an index, as large checkpoints are."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("sharded") / "base"
    AutoModelForCausalLM.from_pretrained(str(tiny_llama)).save_pretrained(str(folder), max_shard_size="1MB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, folder / name)
    return folder


def test_stream_equals_peft_on_llama(tiny_llama, tmp_path):
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    stats = stream(tiny_llama, adapter, tmp_path / "out")
    want, got = peft_merged(tiny_llama, adapter), loaded(tmp_path / "out")
    assert max_difference(want, got) < 1e-6
    touched = changed(loaded(tiny_llama), got)
    assert stats["merged"] == len(touched) == 4 and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in touched)


def test_rslora_and_patterns(tiny_llama, tmp_path):
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, use_rslora=True,
                           target_modules=["q_proj", "v_proj", "down_proj"],
                           rank_pattern={"down_proj": 2}, alpha_pattern={"layers.1.self_attn.v_proj": 3})
    stream(tiny_llama, adapter, tmp_path / "out")
    assert max_difference(peft_merged(tiny_llama, adapter), loaded(tmp_path / "out")) < 1e-6


def test_sharded_base_through_the_script(sharded_llama, tmp_path, llama_tokenizer):
    from transformers import AutoModelForCausalLM

    files = sorted(p.name for p in sharded_llama.glob("*.safetensors"))
    assert len(files) > 2 and (sharded_llama / merge.INDEX).is_file()
    adapter = make_adapter(sharded_llama, tmp_path / "adapter", r=8, lora_alpha=16, target_modules="all-linear")
    out = tmp_path / "merged"
    load_export_script().main(base_model=str(sharded_llama), lora_weights=str(adapter), out=str(out))
    assert sorted(p.name for p in out.glob("*.safetensors")) == files
    index, base_index = (json.loads((f / merge.INDEX).read_text()) for f in (out, sharded_llama))
    assert index["weight_map"] == base_index["weight_map"]
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in loaded(out).values())
    assert max_difference(peft_merged(sharded_llama, adapter), loaded(out)) < 1e-6
    ids = llama_tokenizer(["Name three primary colors."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
        reference = AutoModelForCausalLM.from_pretrained(str(sharded_llama)).eval()
        reference.load_state_dict(peft_merged(sharded_llama, adapter))
        assert (model(ids).logits - reference(ids).logits).abs().max() < 1e-5


def test_bfloat16_is_rounded_once(tiny_llama, tmp_path):
    """bf16 weights: W + delta in fp32, rounded once (peft rounds the delta, then the sum: within a step of it)."""
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    stream(tiny_llama, adapter, tmp_path / "out", torch.bfloat16)
    got, base = loaded(tmp_path / "out", torch.bfloat16), loaded(tiny_llama)
    exact = peft_merged(tiny_llama, adapter)  # fp32
    for key in got:
        assert got[key].dtype == torch.bfloat16
        assert torch.equal(got[key], exact[key].to(torch.bfloat16)), key
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert changed({k: v.to(torch.bfloat16) for k, v in base.items()}, got)
    peft_bf16 = peft_merged(tiny_llama, adapter, torch.bfloat16)
    for key in got:  # three bf16 roundings against one: a few units in the last place of |W| + |delta|
        bound = 2 ** -7 * (base[key].abs() + (exact[key] - base[key]).abs())
        assert ((got[key].float() - peft_bf16[key].float()).abs() <= bound).all(), key


def gpt2_base(folder: Path, strip_prefix: bool) -> Path:
    """A tiny GPT-2 (Conv1D weights stored (in, out): fan_in_fan_out); optionally saved with the hub's
    original key names (h.0.attn..., no transformer. prefix)."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)).save_pretrained(folder)
    if strip_prefix:
        tensors = load_file(folder / merge.SINGLE)
        save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, folder / merge.SINGLE,
                  metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("strip_prefix", [False, True])
def test_gpt2_fan_in_fan_out(tmp_path, strip_prefix):
    base = gpt2_base(tmp_path / "gpt2", strip_prefix)
    adapter = make_adapter(base, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                           fan_in_fan_out=True)
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"]
    stats = stream(base, adapter, tmp_path / "out")
    assert stats["merged"] == 4
    assert max_difference(peft_merged(base, adapter), loaded(tmp_path / "out")) < 1e-6


REFUSED = {
    "DoRA": (dict(use_dora=True), "DoRA"),
    "modules_to_save": (dict(modules_to_save=["lm_head"]), "modules_to_save"),
    "bias": (dict(bias="all"), "bias='all'"),
    "lora_bias": (dict(lora_bias=True), "lora_bias"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unsupported_adapters_are_refused(case, tiny_llama, tmp_path):
    extra, words = REFUSED[case]
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV, **extra)
    with pytest.raises(UserError, match=f"{words}.*--method peft"):
        stream(tiny_llama, adapter, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_embedding_lora_and_foreign_bases_are_refused(tiny_llama, tmp_path):
    adapter = make_adapter(tiny_llama, tmp_path / "embed", r=4, lora_alpha=8, target_modules=["embed_tokens"])
    with pytest.raises(UserError, match="embed_tokens.*not a linear"):
        stream(tiny_llama, adapter, tmp_path / "out")
    qv = make_adapter(tiny_llama, tmp_path / "qv", r=4, lora_alpha=8, target_modules=QV)
    gpt2 = gpt2_base(tmp_path / "gpt2", False)
    with pytest.raises(UserError, match="no weight for adapter module model.layers.0.self_attn.q_proj"):
        merge.plan(gpt2, merge.load_adapter(qv), None, "adapter")
    config = json.loads((qv / "adapter_config.json").read_text())
    (qv / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(UserError, match="rank 4 but adapter_config.json says 8"):
        merge.load_adapter(qv)


def test_script_refusals_write_nothing(tiny_llama, tmp_path, monkeypatch):
    export = load_export_script()
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    out = tmp_path / "merged"
    with pytest.raises(UserError, match="--device auto is for --method peft"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out), device="auto")
    with pytest.raises(UserError, match="--method"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out), method="fast")
    binary = tmp_path / "bin-base"
    binary.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, binary / name)
    (binary / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UserError, match="no safetensors weights.*--method peft"):
        export.main(base_model=str(binary), lora_weights=str(adapter), out=str(out))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(UserError, match=r"needs about \d+\.\d MiB \(an estimate, with a margin\), .* has 0\.0 MiB free"):
        export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "bin-base"]


def test_peft_method_still_works(tiny_llama, tmp_path):
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    export = load_export_script()
    export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(tmp_path / "peft"), method="peft")
    export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(tmp_path / "stream"))
    assert max_difference(loaded(tmp_path / "peft"), loaded(tmp_path / "stream")) < 1e-6
    marker = json.loads((tmp_path / "stream" / export.MARKER).read_text())
    assert marker["method"] == "stream"


def test_missing_shard_or_broken_index_is_one_line(sharded_llama, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(sharded_llama, base)
    adapter = make_adapter(base, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    sorted(base.glob("model-*.safetensors"))[-1].unlink()
    with pytest.raises(UserError, match="cannot be read"):
        merge.plan(base, merge.load_adapter(adapter), None, "adapter")
    (base / merge.INDEX).write_text("{}")
    with pytest.raises(UserError, match="not a safetensors index"):
        merge.plan(base, merge.load_adapter(adapter), None, "adapter")


def test_export_at_scale_reuses_only_a_base_of_its_shape(tmp_path):
    import importlib.util

    from alpaca_cot import ROOT

    spec = importlib.util.spec_from_file_location("export_at_scale", ROOT / "scripts" / "export_at_scale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    base = tmp_path / "base"
    script.shape_tensors("7b")[0].save_pretrained(base)
    assert not script.base_matches(base, "7b")  # no index: not complete
    (base / merge.INDEX).write_text("{}")
    assert script.base_matches(base, "7b") and not script.base_matches(base, "13b")


def test_export_at_scale_builds_its_base_through_the_folder_writer(tmp_path, monkeypatch):
    import importlib.util

    from alpaca_cot import ROOT, io
    from alpaca_cot.model import tiny

    spec = importlib.util.spec_from_file_location("export_at_scale", ROOT / "scripts" / "export_at_scale.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(tiny.SHAPES, "tiny", (16, 32, 1, 2))
    base = tmp_path / "base"
    script.build_base(base, "tiny", shard_gib=0.001)
    assert script.base_matches(base, "tiny") and (base / io.MARKER).is_file()
    monkeypatch.setattr(script, "random_tensor", lambda name, shape: 1 / 0)  # a build that fails half-way
    with pytest.raises(ZeroDivisionError):
        script.build_base(base, "tiny", shard_gib=0.001)
    assert script.base_matches(base, "tiny") and sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    (tmp_path / ".base.saving-999999999").mkdir()  # a killed call's (no such process)
    script.check_workdir(tmp_path, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_overwrite_the_export_in_the_current_folder(tiny_llama, tmp_path, monkeypatch):
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=QV)
    export = load_export_script()
    export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=str(tmp_path / "merged"))
    monkeypatch.chdir(tmp_path / "merged")
    export.main(base_model=str(tiny_llama), lora_weights=str(adapter), out=".", overwrite=True)
    assert (tmp_path / "merged" / export.MARKER).is_file() and sorted(tmp_path.iterdir()) == [adapter, tmp_path / "merged"]
