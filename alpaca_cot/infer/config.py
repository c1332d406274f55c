"""generate's configuration: every flag of generate.py as one typed field with its default, its help and
the range its value must be in (alpaca_cot/config.py says how).

A decoding field left at None takes the recipe's value (train/recipes.py: `default` or `2023`), and merge
and compile are decided by what the run can use (generate.py). Torch-free: the command line is checked
against it before anything heavy is imported.
"""

from dataclasses import dataclass

from alpaca_cot.config import POSITIVE_INT, flag
from alpaca_cot.model.checks import DECODING_RULES


@dataclass
class GenerateConfig:
    """Answer instructions with the adapter that finetune.py saved (the folder finetune.py names by default).

    Flags left unset take the recipe's values: by default greedy decoding of up to 256 tokens with the
    alpaca template; --recipe 2023 is the original generate.py's (alpaca_legacy template, 4-beam sampling at
    temperature 1.0, top_p 0.9, top_k 40, repetition penalty 1.8, no repeated 6-grams, 512 tokens, unmerged).
    """
    # the model and the adapter
    size: int = flag(7, 'LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.')
    data: str = flag('cot', 'the --data the adapter was trained on; finds it in saved-{data}{size}b, or '
                     'saved-{data}-{base name} with --base_model (where finetune.py saved it).')
    base_model: str = flag(None,
        'local folder, hub id (org/name or gpt2), .gguf file or preset of the base model; wins over --size.')
    lora_weights: str = flag(None, 'the adapter folder or hub id; wins over --size and --data.')
    quantization: str = flag('none', 'none (16-bit), 8bit or 4bit.')
    recipe: str = flag(None, 'default, or 2023 (the original Alpaca-CoT decoding and prompt); explicit flags win.')
    prompt_template_name: str = flag(None, 'a template in templates/ (alpaca; alpaca_legacy with --recipe 2023; '
                                     "chat: the tokenizer's own chat template, as the adapter was trained with it).")
    merge: bool = flag(None, 'fold the adapter into the base weights (faster); on by default without --quantization.')
    compile: bool = flag(None, 'static KV cache, compiled; by default for long --input_file runs on a GPU.')
    # what to answer
    instruction: str = flag(None, 'answer this one instruction and print the answer.', text=True)
    input: str = flag('', "the instruction's input (context), if it has one.", text=True)
    input_file: str = flag(None, 'answer every record of this .json or .jsonl file.')
    output_file: str = flag(None, 'where the --input_file answers go, as JSONL; INPUT.answers.jsonl by default.')
    batch_size: int = flag(8, 'prompts answered together from --input_file.', POSITIVE_INT)
    skip_bad_records: bool = flag(False, 'skip malformed --input_file records instead of stopping.')
    overwrite: bool = flag(False, 'replace an existing --output_file.')
    cot: bool = flag(False, 'append "Let\'s think step by step." to each instruction.')
    # decoding
    max_new_tokens: int = flag(None, 'longest answer in tokens (256).', DECODING_RULES["max_new_tokens"])
    temperature: float = flag(None, '0 decodes greedily (the default); above 0 samples at this temperature.',
                              DECODING_RULES["temperature"])
    top_p: float = flag(None, 'nucleus sampling: keep the most likely tokens up to this total probability (1.0).',
                        DECODING_RULES["top_p"])
    top_k: int = flag(None, 'sampling keeps only the k most likely tokens (0: all, the default).',
                      DECODING_RULES["top_k"])
    num_beams: int = flag(None, 'beam search with this many beams (1: none, the default).', DECODING_RULES["num_beams"])
    repetition_penalty: float = flag(None, 'above 1 discourages repeated tokens (1.0).',
                                     DECODING_RULES["repetition_penalty"])
    no_repeat_ngram_size: int = flag(None, 'never repeat an n-gram of this many tokens (0: off, the default).')
    seed: int = flag(42, 'seeds sampling.')
    no_adapter: bool = flag(False, 'answer with the base model alone.')
    # the web page
    web: bool = flag(False, 'serve a Gradio page instead of answering here.')
    server_name: str = flag('127.0.0.1', 'address the --web page listens on.')
    server_port: int = flag(7860, 'port the --web page listens on.')
    share: bool = flag(False, 'ask Gradio for a public link to the --web page (needs --expose).')
    expose: bool = flag(False,
        'allow --share or a --server_name other than loopback: anyone who reaches it can use the model.')
    auth: str = flag(None, 'user:pass login for the --web page.')
    device_map: str = flag(None, 'auto splits a model larger than one GPU over the visible GPUs (then the CPU); '
                           'cpu keeps it on the CPU.')
