"""The ways generate.py answers: one instruction, a file of records, an interactive prompt, a web page.

Each takes a loaded `Generator`; generate.py only parses flags and picks one.
"""

import ipaddress
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from alpaca_cot.data import loader, preprocess

from alpaca_cot import outputs
from alpaca_cot.cli import UserError
from alpaca_cot.infer.generation import Generator, decoding_kwargs, with_cot
from alpaca_cot.io import atomic_open


def read_records(input_file, skip_bad_records=False) -> list[dict]:
    """The records to answer, checked before any model is loaded (no output field needed)."""
    records, skipped = loader.load_file(Path(input_file), skip_bad_records, require_output=False)
    if skipped:
        print(f"{input_file}: skipped {skipped} bad records", file=sys.stderr)
    if not records:
        raise UserError(f"{input_file}: no records to answer")
    return records


def output_path(input_file, output_file=None, overwrite=False, inputs=()) -> Path:
    """Where --input_file's answers go, checked before any model is loaded (alpaca_cot/outputs.py's output rule):
    never an input (the --input_file, the adapter, the base model), never a folder, writable, and an existing
    file only with --overwrite (a JSON Lines file only)."""
    out = Path(output_file or Path(input_file).with_suffix(".answers.jsonl"))
    outputs.check_outputs([outputs.Output(out, "--output_file", "jsonl")], [("--input_file", input_file), *inputs], overwrite)
    return out


def check_room(output_file, records, max_new_tokens: int):
    """Refuse before the model loads when the disk cannot hold the answers (outputs.check_space)."""
    outputs.check_space([outputs.Output(output_file, "--output_file", "jsonl",
                                        outputs.answers_bytes(records, max_new_tokens))])


def file_prompts(gen: Generator, records, cot) -> list:
    """Each record's prompt: a text prompt, or for a record with history the ids of the conversation, rendered
    as training renders multi-turn records (preprocess.prompt_ids), the interactive mode's way."""
    prompts = []
    for r in records:
        if r.get("history"):
            asked = with_cot(r["instruction"]) if cot else r["instruction"]
            prompts.append(preprocess.prompt_ids(gen.tokenizer, gen.prompter, r["history"], asked, r["input"]))
        else:
            prompts.append(gen.prompt(r["instruction"], r["input"], cot))
    return prompts


def answer_file(gen: Generator, records, input_file, output_file, batch_size, cot, decoding):
    prompts = file_prompts(gen, records, cot)
    gen.check_fits(prompts, decoding["max_new_tokens"], what=f"{input_file}: record")
    output_file = Path(output_file or Path(input_file).with_suffix(".answers.jsonl"))
    with atomic_open(output_file) as f:
        for start in tqdm(range(0, len(records), batch_size), desc="answering", unit="batch"):
            answers = gen.generate(prompts[start:start + batch_size], **decoding)
            for r, answer in zip(records[start:start + batch_size], answers):
                row = {"instruction": r["instruction"], "input": r["input"], "output": answer}
                if r.get("history"):
                    row["history"] = r["history"]
                if "output" in r:
                    row["reference"] = r["output"]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} answers to {output_file}")


def interactive(gen: Generator, cot, decoding):
    """A conversation: each answer sees the earlier turns, rendered as multi-turn training renders them."""
    print("Type an instruction (an empty line or Ctrl-D quits; /new starts a new conversation).")
    history = []
    while True:
        try:
            instruction = input("\n### Instruction: ").strip()
        except EOFError:
            break
        if not instruction:
            break
        if instruction == "/new":
            history = []
            continue
        gen.prompt(instruction)  # the same check of the instruction as every other mode
        asked = with_cot(instruction) if cot else instruction
        prompt = preprocess.prompt_ids(gen.tokenizer, gen.prompter, history, asked)
        try:
            gen.check_fits([prompt], decoding["max_new_tokens"], "the conversation")
        except UserError as e:  # the session goes on; /new frees the context
            print(f"error: {e}", file=sys.stderr, flush=True)
            continue
        print("### Response: ", end="", flush=True)
        if decoding["num_beams"] > 1:  # beams pick the answer at the end: nothing to stream
            answer = gen.generate([prompt], **decoding)[0]
            print(answer)
        else:
            pieces = []
            for piece in gen.stream(prompt, **decoding):
                pieces.append(piece)
                print(piece, end="", flush=True)
            print()
            answer = gen.prompter.answer("".join(pieces))
        history.append([asked, answer])


# One web request may not take the machine: new tokens times beams is capped.
WEB_MAX_NEW_TOKENS = 1024
WEB_MAX_BEAMS = 4
WEB_MAX_TOKENS_X_BEAMS = 2048


def web_answer(gen: Generator, instruction, input="", cot=False, max_new_tokens=256, temperature=0.0,
               top_p=1.0, top_k=0, num_beams=1):
    """The web page's callback: one answer, or a one-line message for bad input or a request over the caps."""
    try:
        decoding = decoding_kwargs(int(max_new_tokens), float(temperature), float(top_p), int(top_k), int(num_beams))
        if (decoding["max_new_tokens"] > WEB_MAX_NEW_TOKENS or decoding["num_beams"] > WEB_MAX_BEAMS
                or decoding["max_new_tokens"] * decoding["num_beams"] > WEB_MAX_TOKENS_X_BEAMS):
            raise UserError(f"at most {WEB_MAX_NEW_TOKENS} new tokens, {WEB_MAX_BEAMS} beams, and "
                            f"{WEB_MAX_TOKENS_X_BEAMS} new tokens x beams per request")
        return gen.generate([gen.prompt(instruction, input, cot)], **decoding)[0]
    except UserError as e:
        return f"error: {e}"


def import_gradio():
    try:
        import gradio
    except ImportError:
        raise UserError("--web needs gradio: pip install gradio") from None
    return gradio


def is_loopback(server_name: str) -> bool:
    if server_name == "localhost":
        return True
    try:
        return ipaddress.ip_address(server_name).is_loopback
    except ValueError:
        return False


def check_serving(server_name="127.0.0.1", share=False, expose=False, auth=None) -> tuple[str, str] | None:
    """The web page stays on this machine unless --expose confirms --share or a non-loopback --server_name;
    --auth user:password asks for a login. Returns gradio's auth pair."""
    if (share or not is_loopback(str(server_name))) and not expose:
        what = "--share publishes the page through a public gradio.live link" if share else \
            f"--server_name {server_name} opens the page to the network"
        raise UserError(f"{what}, where anyone who finds it can use this machine; pass --expose to confirm "
                        "(and --auth user:password to ask for a login)")
    if auth is None:
        return None
    user, _, password = str(auth).partition(":")
    if not user or not password:
        raise UserError("--auth needs the form user:password")
    return user, password


def serve(gen: Generator, server_name, server_port, share, auth: tuple[str, str] | None = None):
    gr = import_gradio()
    inputs = [gr.Textbox(lines=2, label="Instruction"), gr.Textbox(lines=2, label="Input"),
              gr.Checkbox(label="Chain of thought"),
              gr.Slider(1, WEB_MAX_NEW_TOKENS, 256, step=1, label="Max new tokens"),
              gr.Slider(0, 2, 0, label="Temperature (0 = greedy)"), gr.Slider(0.05, 1, 1, label="Top p"),
              gr.Slider(0, 100, 0, step=1, label="Top k"),
              gr.Slider(1, WEB_MAX_BEAMS, 1, step=1, label=f"Beams (new tokens x beams <= {WEB_MAX_TOKENS_X_BEAMS})")]
    gr.Interface(fn=lambda *a: web_answer(gen, *a), inputs=inputs, outputs=gr.Textbox(label="Response"),
                 title="alpaca-cot").launch(server_name=server_name, server_port=server_port, share=share, auth=auth)


# Compiling costs tens of seconds per batch shape and then saves seconds per batch; below this many
# decoded steps it did not pay back in the measurements of benchmarks/README.md.
COMPILE_PAYS_AFTER_STEPS = 4096


def worth_compiling(records, batch_size, max_new_tokens, quantization) -> bool:
    """A compiled static KV cache for long --input_file runs on a GPU in 16-bit, eager otherwise."""
    if records is None or quantization != "none" or not torch.cuda.is_available():
        return False
    return -(-len(records) // batch_size) * max_new_tokens >= COMPILE_PAYS_AFTER_STEPS
