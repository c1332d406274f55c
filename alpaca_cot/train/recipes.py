"""Named recipes: the settings finetune.py and generate.py use for flags left unset.

`default` is this project's corrected, fast recipe; `2023` is the original Alpaca-CoT one
(PhoebusSi/Alpaca-CoT finetune.py at 07b8421 and generate.py at 1d819b6): int8, micro-batch 4,
every record padded to cutoff_len, loss on prompt and response (its DataCollatorForLanguageModeling
replaced the response-only labels with the ids, pad positions -100), gradient checkpointing with
peft's fp32 upcast, the prompt ending in `### Response:` at inference, and beam sampling.
A flag given explicitly (not None) wins over the recipe.
"""

from alpaca_cot.cli import UserError

# The flags whose unset value (None) a recipe decides. finetune's micro_batch_size and
# gradient_checkpointing stay None in `default` (computed below, once the precision is known), and
# fused_kernels too (kernels.use_fused_kernels).
RECIPES = {
    "default": {
        "finetune": dict(train_on_inputs=False, group_by_length=True, pad_to_cutoff=False, upcast_norms=False),
        "generate": dict(prompt_template_name="alpaca", max_new_tokens=256, temperature=0.0, top_p=1.0, top_k=0,
                         num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0),
    },
    "2023": {
        "finetune": dict(quantization="8bit", micro_batch_size=4, gradient_checkpointing=True, fused_kernels=False,
                         train_on_inputs=True, group_by_length=False, pad_to_cutoff=True, upcast_norms=True,
                         lora_target_modules="q_proj,v_proj"),
        "generate": dict(prompt_template_name="alpaca_legacy", max_new_tokens=512, temperature=1.0, top_p=0.9,
                         top_k=40, num_beams=4, repetition_penalty=1.8, no_repeat_ngram_size=6, merge=False),
    },
}


def apply(recipe: str | None, tool: str, flags: dict) -> dict:
    """flags with every None that the recipe (or, without one, `default`) sets filled in."""
    name = "default" if recipe is None else str(recipe)
    if name not in RECIPES:
        raise UserError(f"unknown --recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    chosen = {**RECIPES["default"][tool], **RECIPES[name][tool]}
    return {k: chosen[k] if v is None and k in chosen else v for k, v in flags.items()}


def default_micro_batch_size(quantization: str, fused_kernels: bool) -> int:
    """bf16 with fused kernels fits 32 records of up to 512 tokens of a 7B shape on an 80 GB card and
    runs faster than at 16; without them 32 does not fit (benchmarks/README.md)."""
    return 32 if quantization == "none" and fused_kernels else 16


def default_gradient_checkpointing(quantization: str) -> bool:
    """On for 4-bit, whose users pick it to fit a small GPU (a fraction of the memory, at a third less
    speed: benchmarks/README.md). Off otherwise: 16-bit and 8-bit need a large card either way."""
    return quantization == "4bit"
