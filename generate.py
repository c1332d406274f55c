"""Answer instructions with a base model + LoRA adapter: `python generate.py --size 7 --data cot`.

  --instruction "..." [--input "..."]     one answer, printed
  --input_file F.json|F.jsonl             every record, answered in batches, written as JSONL
  (nothing)                               an interactive prompt that streams the answer
  --web                                   a Gradio page (pip install gradio), on 127.0.0.1
The work happens in alpaca_cot/infer/answer.py and generation.py; all flags: `python generate.py --help`.
"""

from pathlib import Path

import fire

from alpaca_cot.cli import UserError, run


# fire would turn text like "red, green" into a tuple and "None" into None: instructions stay text.
@fire.decorators.SetParseFns(instruction=str, input=str)
def main(size: int = 7, data: str = "cot", base_model: str = None, lora_weights: str = None,
         quantization: str = "none", recipe: str = None, prompt_template_name: str = None,
         instruction: str = None, input: str = "", input_file: str = None, output_file: str = None,
         batch_size: int = 8, cot: bool = False, max_new_tokens: int = None, temperature: float = None,
         top_p: float = None, top_k: int = None, num_beams: int = None, repetition_penalty: float = None,
         no_repeat_ngram_size: int = None, seed: int = 42, no_adapter: bool = False, web: bool = False,
         server_name: str = "127.0.0.1", server_port: int = 7860, share: bool = False, skip_bad_records: bool = False,
         merge: bool = None, compile: bool = None, overwrite: bool = False, expose: bool = False, auth: str = None,
         device_map: str = None):
    """Answer instructions with the adapter that finetune.py saved (the folder finetune.py names by default).

    Flags left unset take the recipe's values: by default greedy decoding of up to 256 tokens with the
    alpaca template; --recipe 2023 is the original generate.py's (alpaca_legacy template, 4-beam sampling at
    temperature 1.0, top_p 0.9, top_k 40, repetition penalty 1.8, no repeated 6-grams, 512 tokens, unmerged).

    Args:
        size: LLaMA size in billions (7, 13, 30 or 65) for huggyllama/llama-{size}b.
        data: the --data the adapter was trained on; finds it in saved-{data}{size}b, or saved-{data}-{base name}
            with --base_model (where finetune.py saved it).
        base_model: local folder, hub id (org/name or gpt2), .gguf file or preset of the base model; wins over --size.
        lora_weights: the adapter folder or hub id; wins over --size and --data.
        quantization: none (16-bit), 8bit or 4bit.
        recipe: default, or 2023 (the original Alpaca-CoT decoding and prompt); explicit flags win.
        prompt_template_name: a template in templates/ (alpaca; alpaca_legacy with --recipe 2023; chat: the
            tokenizer's own chat template, as the adapter was trained with it).
        instruction: answer this one instruction and print the answer.
        input: the instruction's input (context), if it has one.
        input_file: answer every record of this .json or .jsonl file.
        output_file: where the --input_file answers go, as JSONL; INPUT.answers.jsonl by default.
        batch_size: prompts answered together from --input_file.
        cot: append "Let's think step by step." to each instruction.
        max_new_tokens: longest answer in tokens (256).
        temperature: 0 decodes greedily (the default); above 0 samples at this temperature.
        top_p: nucleus sampling: keep the most likely tokens up to this total probability (1.0).
        top_k: sampling keeps only the k most likely tokens (0: all, the default).
        num_beams: beam search with this many beams (1: none, the default).
        repetition_penalty: above 1 discourages repeated tokens (1.0).
        no_repeat_ngram_size: never repeat an n-gram of this many tokens (0: off, the default).
        seed: seeds sampling.
        no_adapter: answer with the base model alone.
        web: serve a Gradio page instead of answering here.
        server_name: address the --web page listens on.
        server_port: port the --web page listens on.
        share: ask Gradio for a public link to the --web page (needs --expose).
        skip_bad_records: skip malformed --input_file records instead of stopping.
        merge: fold the adapter into the base weights (faster); on by default without --quantization.
        compile: static KV cache, compiled; by default for long --input_file runs on a GPU.
        overwrite: replace an existing --output_file.
        expose: allow --share or a --server_name other than loopback: anyone who reaches it can use the model.
        auth: user:pass login for the --web page.
        device_map: auto splits a model larger than one GPU over the visible GPUs (then the CPU); cpu keeps it on the CPU.
    """
    # Imported here, after the flags are checked: torch takes seconds to import.
    import torch

    from alpaca_cot.model import models

    from alpaca_cot.train import recipes
    from alpaca_cot.infer.answer import (answer_file, check_room, check_serving, import_gradio, interactive, output_path,
                                   read_records, serve, worth_compiling)
    from alpaca_cot.data.catalog import check_readable
    from alpaca_cot.train.checkpoints import default_output_dir
    from alpaca_cot.model.checks import check_device_map
    from alpaca_cot.infer.generation import Generator, decoding_kwargs

    flags = recipes.apply(recipe, "generate", dict(
        prompt_template_name=prompt_template_name, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, num_beams=num_beams, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, merge=merge))
    decoding = decoding_kwargs(*(flags[k] for k in ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams",
                                                    "repetition_penalty", "no_repeat_ngram_size")))
    if instruction is not None and not str(instruction).strip():
        raise UserError("--instruction is empty")
    adapter = None if no_adapter else (lora_weights or default_output_dir(data, size, base_model))
    if input_file is not None:
        check_readable(Path(input_file), "--input_file")
        local = [(flag, path) for flag, path in (("--lora_weights", adapter), ("--base_model", base_model))
                 if path is not None and Path(str(path)).exists()]
        output_file = output_path(input_file, output_file, overwrite, local)
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    check_device_map(device_map)
    # Everything the user gave is checked before the model is loaded.
    records = read_records(input_file, skip_bad_records) if input_file is not None else None
    if records is not None:
        check_room(output_file, records, decoding["max_new_tokens"])
    if web and input_file is None and instruction is None:
        auth = check_serving(server_name, share, expose, auth)
        import_gradio()
    name = models.base_model_name(size, base_model)
    if compile is None:
        compile = worth_compiling(records, batch_size, decoding["max_new_tokens"], quantization)
    gen = Generator(name, adapter, quantization, flags["prompt_template_name"], merge=flags["merge"], compile=compile,
                    device_map=device_map)
    torch.manual_seed(seed)  # after loading, which draws random numbers: --seed alone fixes the samples
    if input_file is not None:
        answer_file(gen, records, input_file, output_file, batch_size, cot, decoding)
    elif instruction is not None:
        print(gen.generate([gen.prompt(str(instruction), str(input or ""), cot)], **decoding)[0])
    elif web:
        serve(gen, server_name, server_port, share, auth)
    else:
        interactive(gen, cot, decoding)


if __name__ == "__main__":
    run(main)
