"""One LoRA optimizer step on a tiny LLaMA, sharded with FSDP2 (fully_shard over gloo) or not, then the
adapter saved through sharding.adapter_state_dict and adapters.save_adapter; for tests/test_fsdp.py.

    torchrun --nproc_per_node 2 tests/sharded_step.py BASE OUT none,4bit     # sharded by decoder layer
    python tests/sharded_step.py BASE OUT none,4bit --single                 # the same step in one process

Each quantization listed takes its step in turn, from a fresh model, into OUT/<quantization>: one launch
serves them all (starting the processes costs more than the steps). Sharded, it also writes the adapter as
the Trainer's SHARDED_STATE_DICT checkpoints do (accelerate's save_fsdp_model, adapter_only), loads that
into a freshly built sharded model (load_fsdp_model, as a resume does), and records in
OUT/<quantization>/resume.json whether the loaded adapter equals the trained one.
The Trainer cannot shard on CPUs (accelerate runs FSDP only on GPUs), so this drives fully_shard itself.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alpaca_cot.model import adapters, models, sharding  # noqa: E402
from alpaca_cot.model.models import lora_model  # noqa: E402


def build(base: str, quantization: str, tokenizer, shard: bool):
    torch.manual_seed(0)  # every rank starts from the same adapter, as set_seed gives the Trainer's ranks
    # sharded=True in both: 4-bit weights then get the bf16 storage FSDP needs, and one process the same.
    # 4-bit with gradient checkpointing, as finetune's 4-bit default: the model's own, inside the FSDP units.
    model = lora_model(base, quantization, tokenizer, quantization == "4bit", 8, 16, 0.0, ["q_proj", "v_proj"],
                       sharded=True)
    model.train()
    if shard:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        classes = sharding.layer_classes(base)
        for module in model.modules():
            if type(module).__name__ in classes:
                fully_shard(module)
        fully_shard(model)
        whole = [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
        assert not whole, f"left unsharded: {whole[:3]}"  # 4-bit weights included: their storage is bf16
    return model


def gathered(model, rank0: bool, shard: bool):
    trainer = SimpleNamespace(is_fsdp_enabled=shard, model=model, is_world_process_zero=lambda: rank0)
    return sharding.adapter_state_dict(trainer)


def resume_check(base, quantization, tokenizer, model, out: Path, rank: int) -> dict:
    """The trained adapter through a sharded checkpoint into a fresh sharded model, as the Trainer saves and resumes."""
    import torch.distributed as dist
    from accelerate.utils import load_fsdp_model, save_fsdp_model
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType

    plugin = SimpleNamespace(state_dict_type=StateDictType.SHARDED_STATE_DICT, fsdp_version=2,
                             state_dict_config=None, optim_state_dict_config=None)
    accelerator = SimpleNamespace(process_index=rank, num_processes=2, is_fsdp2=True, is_main_process=rank == 0,
                                  wait_for_everyone=dist.barrier)
    save_fsdp_model(plugin, accelerator, model, str(out / "checkpoint"), adapter_only=True)
    fresh = build(base, quantization, tokenizer, shard=True)
    load_fsdp_model(plugin, accelerator, fresh, str(out / "checkpoint"), adapter_only=True)
    trained, loaded = gathered(model, rank == 0, True), gathered(fresh, rank == 0, True)
    if rank != 0:
        return {}
    return {"keys": sorted(trained) == sorted(loaded) and len(trained) > 0,
            "equal": all(torch.equal(trained[k], loaded[k]) for k in trained),
            "files": sorted(p.name for p in (out / "checkpoint" / "pytorch_model_fsdp_0").iterdir())}


def step(base: str, out: Path, single: bool, quantization: str, rank: int):
    import torch.distributed as dist

    tokenizer = models.load_tokenizer(base)
    model = build(base, quantization, tokenizer, shard=not single)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    ids = torch.tensor([[1, 306, 763, 278, 1243, 310, 2]])
    model(input_ids=ids, labels=ids).loss.backward()  # the same batch on every rank: the mean is its gradient
    optimizer.step()
    state = gathered(model, rank == 0, not single)
    if rank == 0:
        adapters.save_adapter(model, tokenizer, out, state_dict=state)
    if not single:
        result = resume_check(base, quantization, tokenizer, model, out, rank)
        if rank == 0:
            (out / "resume.json").write_text(json.dumps(result))
        dist.barrier()


def main(base: str, out: str, quantizations: list[str], single: bool):
    import torch.distributed as dist

    if not single:
        from accelerate import PartialState

        dist.init_process_group("gloo")
        PartialState(cpu=True)  # accelerate's checkpoint functions log through it
    rank = 0 if single else dist.get_rank()
    for quantization in quantizations:
        step(base, Path(out) / quantization, single, quantization, rank)
    if not single:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), "--single" in sys.argv[4:])
