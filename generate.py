"""Answer instructions with a base model + LoRA adapter: `python generate.py --size 7 --data cot`.

  --instruction "..." [--input "..."]     one answer, printed
  --input_file F.json|F.jsonl             every record, answered in batches, written as JSONL
  (nothing)                               an interactive prompt that streams the answer
  --web                                   a Gradio page (pip install gradio), on 127.0.0.1
The work happens in alpaca_cot/infer/answer.py and generation.py; all flags: `python generate.py --help`.
"""

from pathlib import Path

from alpaca_cot import config
from alpaca_cot.cli import UserError, run
from alpaca_cot.infer.config import GenerateConfig


def main(**flags):
    """Answer instructions with a base model and adapter: the flags are GenerateConfig's fields
    (alpaca_cot/infer/config.py), which also make this function's signature and `--help`."""
    c = GenerateConfig(**flags)
    config.check(c)
    # Imported here, after the flags are checked: torch takes seconds to import.
    import torch

    from alpaca_cot.data.catalog import check_readable
    from alpaca_cot.infer.answer import (answer_file, check_room, check_serving, import_gradio, interactive,
                                         output_path, read_records, serve, worth_compiling)
    from alpaca_cot.infer.generation import Generator, decoding_kwargs
    from alpaca_cot.model import models
    from alpaca_cot.model.checks import check_device_map
    from alpaca_cot.train import recipes
    from alpaca_cot.train.checkpoints import default_output_dir

    chosen = recipes.apply(c.recipe, "generate", {k: getattr(c, k) for k in (
        "prompt_template_name", "max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
        "no_repeat_ngram_size", "merge")})
    decoding = decoding_kwargs(*(chosen[k] for k in ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams",
                                                     "repetition_penalty", "no_repeat_ngram_size")))
    if c.instruction is not None and not str(c.instruction).strip():
        raise UserError("--instruction is empty")
    adapter = None if c.no_adapter else (c.lora_weights or default_output_dir(c.data, c.size, c.base_model))
    output_file = c.output_file
    if c.input_file is not None:
        check_readable(Path(c.input_file), "--input_file")
        local = [(flag, path) for flag, path in (("--lora_weights", adapter), ("--base_model", c.base_model))
                 if path is not None and Path(str(path)).exists()]
        output_file = output_path(c.input_file, c.output_file, c.overwrite, local)
    check_device_map(c.device_map)
    # Everything the user gave is checked before the model is loaded.
    records = read_records(c.input_file, c.skip_bad_records) if c.input_file is not None else None
    if records is not None:
        check_room(output_file, records, decoding["max_new_tokens"])
    auth = c.auth
    if c.web and c.input_file is None and c.instruction is None:
        auth = check_serving(c.server_name, c.share, c.expose, c.auth)
        import_gradio()
    compile = c.compile
    if compile is None:
        compile = worth_compiling(records, c.batch_size, decoding["max_new_tokens"], c.quantization)
    gen = Generator(models.base_model_name(c.size, c.base_model), adapter, c.quantization,
                    chosen["prompt_template_name"], merge=chosen["merge"], compile=compile, device_map=c.device_map)
    torch.manual_seed(c.seed)  # after loading, which draws random numbers: --seed alone fixes the samples
    if c.input_file is not None:
        answer_file(gen, records, c.input_file, output_file, c.batch_size, c.cot, decoding)
    elif c.instruction is not None:
        print(gen.generate([gen.prompt(str(c.instruction), str(c.input or ""), c.cot)], **decoding)[0])
    elif c.web:
        serve(gen, c.server_name, c.server_port, c.share, auth)
    else:
        interactive(gen, c.cot, decoding)


main.__signature__ = config.signature(GenerateConfig)
main = config.text_flags(GenerateConfig)(main)  # Python callers and tests run main through cli.run too


if __name__ == "__main__":
    run(main, flags="alpaca_cot.infer.config:GenerateConfig")
