"""The processes of a launch (torchrun, torch.distributed.launch, accelerate launch): the process group
started bound to each rank's GPU, a step done by the main process while the others wait, and an end that
every rank reaches together. One process (no launcher) skips all of it.
"""

import torch

from alpaca_cot.model import models


def start():
    """Under a GPU launcher, the process group bound to this process's GPU before the Trainer's arguments
    start one without a device, which makes every barrier warn and NCCL guess the rank's GPU."""
    if models.world_size() > 1 and torch.cuda.is_available() and not torch.distributed.is_initialized():
        torch.cuda.set_device(models.local_rank())
        torch.distributed.init_process_group("nccl", device_id=torch.device("cuda", models.local_rank()))


def end():
    """On GPUs, every rank leaves together (rank 0 was still writing the adapter) and frees the NCCL process
    group, which otherwise warns at exit. A gloo (CPU) group is left to the process's exit: destroying it
    there hung a test run now and then."""
    launched = torch.distributed.is_available() and torch.distributed.is_initialized()
    if launched and torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main_process_then_others(fn):
    """fn on the main process while the others wait (they have read the output folder already)."""
    launched = torch.distributed.is_available() and torch.distributed.is_initialized()
    if launched:
        torch.distributed.barrier()
    if models.is_main_process():
        fn()
    if launched:
        torch.distributed.barrier()
