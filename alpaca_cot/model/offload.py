"""Offloaded activation checkpointing (--offload_activations): with gradient checkpointing, what stays on the
GPU between forward and backward is each decoder layer's input; these hooks move such tensors to pinned CPU
memory on a side stream while the next layers compute, and bring each one back, one layer ahead, during
backward.

torch's own `save_on_cpu` copies synchronously, stalling the GPU at every layer; this is the same idea with
the copies on their own CUDA streams. Parameters and small tensors are left where they are. On the CPU (the
tests) a tensor is "offloaded" as a copy, so that the bookkeeping runs without a GPU.
"""

import weakref

import torch

from alpaca_cot.cli import UserError


class _Offloaded:
    """One saved tensor held on the CPU: its copy, the event its copy-out finished on, and, once fetched,
    its copy back on the GPU."""

    __slots__ = ("cpu", "copied", "device", "index", "fetched", "gpu", "ready", "__weakref__")


class OffloadedActivations(torch.autograd.graph.saved_tensors_hooks):
    """saved_tensors_hooks that offload the large activations autograd saves (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, min_bytes: int = 1 << 20):
        self.min_bytes = min_bytes
        self.param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.saved: list[weakref.ref] = []  # this forward's offloaded tensors, in the order they were saved
        self.offloaded = 0  # tensors offloaded since construction (the tests read it)
        self.streams = None
        super().__init__(self._pack, self._unpack)

    def begin_forward(self):
        self.saved = []

    def _pack(self, tensor):
        if tensor.numel() * tensor.element_size() < self.min_bytes \
                or tensor.untyped_storage().data_ptr() in self.param_storages:
            return tensor
        held = _Offloaded()
        held.device, held.index, held.fetched, held.gpu, held.ready = tensor.device, len(self.saved), False, None, None
        if tensor.is_cuda:
            if self.streams is None:
                self.streams = torch.cuda.Stream(tensor.device), torch.cuda.Stream(tensor.device)
            out = self.streams[0]
            out.wait_stream(torch.cuda.current_stream(tensor.device))  # the tensor is written before it is copied
            held.cpu = torch.empty(tensor.size(), dtype=tensor.dtype, pin_memory=True)
            with torch.cuda.stream(out):
                held.cpu.copy_(tensor, non_blocking=True)
                tensor.record_stream(out)  # its memory is not reused before the copy has read it
                held.copied = torch.cuda.Event()
                held.copied.record(out)
        else:
            held.cpu, held.copied = tensor.detach().clone(), None
        self.saved.append(weakref.ref(held))
        self.offloaded += 1
        return held

    def _fetch(self, held: _Offloaded):
        held.fetched = True
        if held.copied is None:
            held.gpu = held.cpu.clone()
            return
        back = self.streams[1]
        back.wait_event(held.copied)
        with torch.cuda.stream(back):
            held.gpu = held.cpu.to(held.device, non_blocking=True)
            held.ready = torch.cuda.Event()
            held.ready.record(back)

    def _unpack(self, held):
        if not isinstance(held, _Offloaded):
            return held
        if held.gpu is None:  # not prefetched, or read a second time
            self._fetch(held)
        tensor, held.gpu = held.gpu, None
        if held.ready is not None:
            current = torch.cuda.current_stream(held.device)
            current.wait_event(held.ready)
            tensor.record_stream(current)  # made on the copy stream, used (and freed) on this one
        # Backward reads the layers' inputs last to first: the one saved before this is fetched next.
        for ref in reversed(self.saved[:held.index]):
            previous = ref()
            if previous is not None and not previous.fetched:
                self._fetch(previous)
                break
        return tensor


def offload_activations(model: torch.nn.Module, gradient_checkpointing: bool,
                        min_bytes: int = 1 << 20) -> OffloadedActivations:
    """Install the hooks around every forward of model (the module the Trainer calls); tensors smaller than
    min_bytes stay where they are."""
    if not gradient_checkpointing:
        raise UserError("--offload_activations offloads the checkpointed layer inputs: it needs "
                        "--gradient_checkpointing True")
    hooks = OffloadedActivations(model, min_bytes)

    def enter(module, args):
        hooks.begin_forward()
        hooks.__enter__()

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(lambda module, args, output: hooks.__exit__(None, None, None), always_call=True)
    return hooks
