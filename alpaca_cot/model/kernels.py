"""Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy): whether a run uses
them, and patching a loaded LLaMA with them.
"""

import logging

import torch

from alpaca_cot.cli import UserError


def _quiet_missing_backends(record) -> bool:
    return "could not be imported" not in record.getMessage()


def _quiet_use_return_dict(record) -> bool:
    return "`use_return_dict` is deprecated" not in record.getMessage()


def quiet_liger():
    """Lines in every fused run that say nothing about it: liger-kernel warns, at a kernel's first use, for
    each optional backend of other hardware (CuTe DSL, Ascend) that it cannot import, and its LLaMA forward
    reads config.use_return_dict, which transformers 5 reports as deprecated."""
    logging.getLogger("liger_kernel.backends.registry").addFilter(_quiet_missing_backends)
    logging.getLogger("transformers.configuration_utils").addFilter(_quiet_use_return_dict)


def use_fused_kernels(requested=None) -> bool:
    """Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) for LLaMA on a GPU:
    by default on where liger-kernel is installed (faster and smaller at every precision, measured in
    one run: benchmarks/README.md); an error if asked for where they cannot run."""
    try:
        import liger_kernel  # noqa: F401
        installed = True
    except ImportError:
        installed = False
    if requested is None:
        return installed and torch.cuda.is_available()
    if requested and not (installed and torch.cuda.is_available()):
        raise UserError("--fused_kernels needs a CUDA GPU and liger-kernel (pip install liger-kernel)")
    return bool(requested)


def apply_fused_kernels(model):
    """Patch a loaded LLaMA in place (before the LoRA wrapper); other architectures are left alone."""
    if getattr(model.config, "model_type", None) != "llama":
        return model
    quiet_liger()
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=model)
    return model


def decoder_layers(model) -> list:
    """The repeated blocks of a (LoRA-wrapped) causal LM: the children of its first ModuleList of *DecoderLayer*
    (LLaMA's model.layers), or of its first ModuleList of blocks (GPT-2's h)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    for wanted in ("DecoderLayer", "Block"):
        for found in lists:
            if type(found[0]).__name__.endswith(wanted):
                return list(found)
    raise UserError(f"--compile_layers: no decoder layers found in {type(model).__name__}")


def compile_layers(model, backend: str = "inductor"):
    """Regional compilation (--compile_layers): each decoder layer compiled on its own, with dynamic shapes, so
    that the layers share their graphs and a new padded length compiles nothing once lengths have varied (the
    first two lengths compile; torch.compile of the whole model would compile it whole, once per shape)."""
    for layer in decoder_layers(model):
        layer.compile(backend=backend, dynamic=True)
    return model
