"""Fine-tune LLaMA with LoRA on instruction data: `python finetune.py --size 7 --data cot`.

All flags: `python finetune.py --help`. The work happens in alpaca_cot/train/finetune.py.
"""

from alpaca_cot.cli import run

if __name__ == "__main__":
    run("alpaca_cot.train.finetune:finetune", flags="alpaca_cot.train.config:FinetuneConfig")  # strings: the flags
    # are checked against the config before torch is imported
