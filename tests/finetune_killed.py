"""finetune.py, killed with SIGKILL at a chosen point, for tests/test_faults.py.

    KILL_AT=step:N   in the middle of the step after step N (one micro-batch accumulated)
    KILL_AT=save:N   while checkpoint-N is written (weights and optimizer saved, no trainer_state.json)
    KILL_AT=final    while the final adapter is moved in (adapter_config.json moved, the weights not)
"""

import os
import signal
from pathlib import Path


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def patch(owner, name, when):
    original = getattr(owner, name)

    def patched(*args, **kwargs):
        if when(*args, **kwargs):
            die()
        return original(*args, **kwargs)

    setattr(owner, name, patched)


def install(point: str):
    from transformers import Trainer

    from alpaca_cot.model import adapters

    kind, _, n = point.partition(":")
    if kind == "step":
        calls = []

        def second_micro_batch(self, *args, **kwargs):
            calls.extend([1] if self.state.global_step == int(n) else [])
            return len(calls) == 2

        patch(Trainer, "training_step", second_micro_batch)
    elif kind == "save":
        patch(Trainer, "_save_rng_state", lambda self, *a, **k: self.state.global_step == int(n))
    elif kind == "final":
        patch(os, "replace", lambda src, dst, **k: adapters.COMMIT in str(src)
              and Path(src).name == "adapter_model.safetensors")


if __name__ == "__main__":
    install(os.environ["KILL_AT"])
    from alpaca_cot.cli import run
    from alpaca_cot.train.finetune import finetune

    run(finetune)
