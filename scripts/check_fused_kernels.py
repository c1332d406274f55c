"""Check that Liger's fused kernels leave the training loss and LoRA gradients unchanged.

    python scripts/check_fused_kernels.py                           # on a GPU: every kernel finetune.py uses
    TRITON_INTERPRET=1 python scripts/check_fused_kernels.py        # on a CPU: the fused linear cross-entropy
        (needs `pip install liger-kernel triton`; the interpreter cannot run the other kernels)

Builds a small random-init LLaMA, takes one batch of demo records through the project's own
pipeline, and compares loss and gradients with and without the kernels, in training mode and with
the `num_items_in_batch` normalisation the Trainer uses under gradient accumulation.
"""

import tempfile

from alpaca_cot.data import loader

from alpaca_cot.model import tiny
from alpaca_cot.cli import UserError, lazy_import, run
from alpaca_cot.data.preprocess import Prompter, encode_batch

# Imported on first use: the flags are checked before torch's seconds of importing.
torch = lazy_import("torch")
kernels = lazy_import("alpaca_cot.model.kernels")
models = lazy_import("alpaca_cot.model.models")
throughput = lazy_import("alpaca_cot.train.throughput")


def loss_and_grads(model_dir, batch, fused: bool, num_items=None):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    if fused:
        if device == "cuda":
            kernels.apply_fused_kernels(model)
        else:  # the Triton interpreter runs the fused cross-entropy, not the element-wise kernels
            from liger_kernel.transformers import apply_liger_kernel_to_llama
            apply_liger_kernel_to_llama(rope=False, rms_norm=False, swiglu=False, cross_entropy=False,
                                        fused_linear_cross_entropy=True, model=model)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give it values so every gradient is exercised
            torch.nn.init.normal_(p, std=0.02)
    model.train()
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items, device=device)}
    out = model(**{k: v.to(device) for k, v in batch.items()}, **extra)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}


def main(records: int = 8, cutoff_len: int = 256, tolerance: float = 1e-4):
    """Compare loss and LoRA gradients with and without Liger's fused kernels on one batch.

    Args:
        records: demo records in the batch.
        cutoff_len: longest record in tokens.
        tolerance: largest relative difference in loss or gradients that passes.
    """
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        raise UserError("liger-kernel is not installed: pip install -r requirements-gpu.txt") from None
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(tiny.build(tmp, hidden_size=128))
        tokenizer = models.load_tokenizer(model_dir)
        columns = loader.load("demo")
        batch = {k: v[:records] for k, v in columns.items()}
        enc = encode_batch(batch, tokenizer, Prompter(), cutoff_len)
        collated = throughput.CountingCollator(tokenizer)([{"input_ids": i, "labels": l}
                                                 for i, l in zip(enc["input_ids"], enc["labels"])])
        worst = 0.0
        for num_items in (None, 1000):
            base_loss, base_grads = loss_and_grads(model_dir, collated, False, num_items)
            loss, grads = loss_and_grads(model_dir, collated, True, num_items)
            grad_diff = max(((grads[k] - g).abs().max() / g.abs().max()).item() for k, g in base_grads.items())
            loss_diff = abs(loss - base_loss) / abs(base_loss)
            worst = max(worst, grad_diff, loss_diff)
            print(f"num_items_in_batch={num_items}: loss {base_loss:.6f} unfused, {loss:.6f} fused "
                  f"(relative difference {loss_diff:.1e}); LoRA gradients differ by at most {grad_diff:.1e} "
                  f"relative, over {len(grads)} tensors")
    if worst > tolerance:
        raise UserError(f"fused kernels change the loss or gradients by {worst:.1e} (> {tolerance})")
    print("fused kernels: same loss and gradients")


if __name__ == "__main__":
    run(main)
