"""Answer instructions with a base model + LoRA adapter: `python generate.py --size 7 --data cot`.

  --instruction "..." [--input "..."]     one answer, printed
  --input_file F.json|F.jsonl             every record, answered in batches, written as JSONL
  (nothing)                               an interactive prompt that streams the answer
  --web                                   a Gradio page (pip install gradio), on 127.0.0.1
The work happens in alpaca_cot/generation.py; all flags: `python generate.py --help`.
"""

import json
import os
import sys
from pathlib import Path

import fire
import torch
from tqdm import tqdm

from alpaca_cot import data, models
from alpaca_cot.cli import UserError, run
from alpaca_cot.generation import Generator, decoding_kwargs
from alpaca_cot.train import default_output_dir


def read_records(input_file, skip_bad_records=False) -> list[dict]:
    """The records to answer, checked before any model is loaded (no output field needed)."""
    records, skipped = data.load_file(Path(input_file), skip_bad_records, require_output=False)
    if skipped:
        print(f"{input_file}: skipped {skipped} bad records", file=sys.stderr)
    if not records:
        raise UserError(f"{input_file}: no records to answer")
    return records


def answer_file(gen: Generator, records, input_file, output_file, batch_size, cot, decoding):
    prompts = [gen.prompt(r["instruction"], r["input"], cot) for r in records]
    output_file = Path(output_file or Path(input_file).with_suffix(".answers.jsonl"))
    output_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_file.with_name(f".{output_file.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for start in tqdm(range(0, len(records), batch_size), desc="answering", unit="batch"):
                answers = gen.generate(prompts[start:start + batch_size], **decoding)
                for r, answer in zip(records[start:start + batch_size], answers):
                    row = {"instruction": r["instruction"], "input": r["input"], "output": answer}
                    if "output" in r:
                        row["reference"] = r["output"]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, output_file)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {len(records)} answers to {output_file}")


def interactive(gen: Generator, cot, decoding):
    print("Type an instruction (an empty line or Ctrl-D quits).")
    while True:
        try:
            instruction = input("\n### Instruction: ").strip()
        except EOFError:
            break
        if not instruction:
            break
        prompt = gen.prompt(instruction, "", cot)
        print("### Response: ", end="", flush=True)
        if decoding["num_beams"] > 1:  # beams pick the answer at the end: nothing to stream
            print(gen.generate([prompt], **decoding)[0])
            continue
        for piece in gen.stream(prompt, **decoding):
            print(piece, end="", flush=True)
        print()


def web_answer(gen: Generator, instruction, input="", cot=False, max_new_tokens=256, temperature=0.0,
               top_p=1.0, top_k=0, num_beams=1):
    """The web page's callback: one answer, or a one-line message for bad input."""
    try:
        decoding = decoding_kwargs(int(max_new_tokens), float(temperature), float(top_p), int(top_k), int(num_beams))
        return gen.generate([gen.prompt(instruction, input, cot)], **decoding)[0]
    except UserError as e:
        return f"error: {e}"


def import_gradio():
    try:
        import gradio
    except ImportError:
        raise UserError("--web needs gradio: pip install gradio") from None
    return gradio


def serve(gen: Generator, server_name, server_port, share):
    gr = import_gradio()
    inputs = [gr.Textbox(lines=2, label="Instruction"), gr.Textbox(lines=2, label="Input"),
              gr.Checkbox(label="Chain of thought"), gr.Slider(1, 2048, 256, step=1, label="Max new tokens"),
              gr.Slider(0, 2, 0, label="Temperature (0 = greedy)"), gr.Slider(0.05, 1, 1, label="Top p"),
              gr.Slider(0, 100, 0, step=1, label="Top k"), gr.Slider(1, 8, 1, step=1, label="Beams")]
    gr.Interface(fn=lambda *a: web_answer(gen, *a), inputs=inputs, outputs=gr.Textbox(label="Response"),
                 title="alpaca-cot").launch(server_name=server_name, server_port=server_port, share=share)


# Measured on an H200 (README, Speed): compiling costs about 28 s per batch shape and then saves about
# 2.8 s per batch of 128 new tokens; below this many decoded steps it does not pay back.
COMPILE_PAYS_AFTER_STEPS = 4096


def worth_compiling(records, batch_size, max_new_tokens, quantization) -> bool:
    """A compiled static KV cache for long --input_file runs on a GPU in 16-bit, eager otherwise."""
    if records is None or quantization != "none" or not torch.cuda.is_available():
        return False
    return -(-len(records) // batch_size) * max_new_tokens >= COMPILE_PAYS_AFTER_STEPS


# fire would turn text like "red, green" into a tuple and "None" into None: instructions stay text.
@fire.decorators.SetParseFns(instruction=str, input=str)
def main(size: int = 7, data: str = "cot", base_model: str = None, lora_weights: str = None,
         quantization: str = "none", prompt_template_name: str = "alpaca",
         instruction: str = None, input: str = "", input_file: str = None, output_file: str = None,
         batch_size: int = 8, cot: bool = False, max_new_tokens: int = 256, temperature: float = 0.0,
         top_p: float = 1.0, top_k: int = 0, num_beams: int = 1, repetition_penalty: float = 1.0, seed: int = 42,
         no_adapter: bool = False, web: bool = False, server_name: str = "127.0.0.1", server_port: int = 7860,
         share: bool = False, skip_bad_records: bool = False, merge: bool = None, compile: bool = None):
    """Answer instructions with the adapter that finetune.py saved (saved-{data}{size}b by default)."""
    decoding = decoding_kwargs(max_new_tokens, temperature, top_p, top_k, num_beams, repetition_penalty)
    if instruction is not None and not str(instruction).strip():
        raise UserError("--instruction is empty")
    if input_file is not None and not Path(input_file).is_file():
        raise UserError(f"--input_file {input_file} not found")
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    # Everything the user gave is checked before the model is loaded.
    records = read_records(input_file, skip_bad_records) if input_file is not None else None
    if web and input_file is None and instruction is None:
        import_gradio()
    name = models.base_model_name(size, base_model)
    adapter = None if no_adapter else (lora_weights or default_output_dir(data, size))
    if compile is None:
        compile = worth_compiling(records, batch_size, max_new_tokens, quantization)
    gen = Generator(name, adapter, quantization, prompt_template_name, merge=merge, compile=compile)
    torch.manual_seed(seed)  # after loading, which draws random numbers: --seed alone fixes the samples
    if input_file is not None:
        answer_file(gen, records, input_file, output_file, batch_size, cot, decoding)
    elif instruction is not None:
        print(gen.generate([gen.prompt(str(instruction), str(input or ""), cot)], **decoding)[0])
    elif web:
        serve(gen, server_name, server_port, share)
    else:
        interactive(gen, cot, decoding)


if __name__ == "__main__":
    run(main)
