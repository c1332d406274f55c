"""Reload a base model with its LoRA adapter and answer instructions.

One `Generator` serves every mode of generate.py: a single answer, batches from a file
(left padding), streaming for the interactive prompt, and the web page's callback.
Answers are cut from the generated ids after the prompt, never by splitting text.
"""

import json
import threading

import torch

from alpaca_cot.model import models
from alpaca_cot.model.adapters import check_adapter_source, load_adapter, tokenizer_source, tuned_model
from alpaca_cot.config import require
from alpaca_cot.model.checks import DECODING_RULES, check_device_map, check_quantization
from alpaca_cot.cli import UserError
from alpaca_cot.data.preprocess import Prompter, encode_prompt

# Appended by --cot: the zero-shot chain-of-thought trigger.
COT_TRIGGER = "Let's think step by step."


def with_cot(instruction: str) -> str:
    return f"{instruction.rstrip()} {COT_TRIGGER}"


def decoding_kwargs(max_new_tokens=256, temperature=0.0, top_p=1.0, top_k=0, num_beams=1,
                    repetition_penalty=1.0, no_repeat_ngram_size=0) -> dict:
    """Greedy unless a sampling knob is set; beam search when num_beams > 1 (beam sampling with both)."""
    require(DECODING_RULES, locals())
    if not isinstance(no_repeat_ngram_size, int) or isinstance(no_repeat_ngram_size, bool) or no_repeat_ngram_size < 0:
        raise UserError(f"--no_repeat_ngram_size must be an integer >= 0, got {no_repeat_ngram_size!r}")
    sample = temperature > 0
    kwargs = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=sample,
                  repetition_penalty=repetition_penalty)
    if no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
    else:  # keep the model's generation_config from adding sampling knobs to greedy/beam runs
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


# With a compiled static cache, prompts are left-padded to a multiple of this, so that a file of
# prompts of every length compiles a handful of shapes rather than one per length.
PAD_MULTIPLE = 64


def check_template_family(folder, prompt_template_name: str):
    """An adapter (or fully tuned model) trained with the chat template is prompted with it, and one trained with an
    alpaca-style template with one of those (alpaca_legacy is the 2023 inference prompt for alpaca training)."""
    from pathlib import Path

    run = Path(str(folder)) / "run.json"
    if not run.is_file():
        return
    try:
        trained = json.loads(run.read_text()).get("prompt_template")
    except (OSError, ValueError):
        return
    if trained and (trained == "chat") != (prompt_template_name == "chat"):
        raise UserError(f"{folder} was trained with --prompt_template_name {trained}; generate with "
                        f"--prompt_template_name {trained if trained == 'chat' else 'alpaca'}, not {prompt_template_name}")


class Generator:
    """merge (default: on for 16/32-bit) folds the adapter into the weights, which is faster and
    exact up to rounding; compile decodes with a static KV cache that transformers compiles, which
    costs a compilation per new shape and then runs faster (benchmarks/README.md)."""

    def __init__(self, base_model: str, lora_weights: str | None, quantization: str = "none",
                 prompt_template_name: str = "alpaca", merge: bool | None = None, compile: bool = False,
                 device_map: str | None = None):
        check_quantization(quantization)
        merge = quantization == "none" if merge is None else merge
        if merge and quantization != "none" and lora_weights is not None:
            raise UserError("--merge needs --quantization none: folding an adapter into 8/4-bit weights loses precision")
        self.compile = compile
        self.prompter = Prompter(prompt_template_name)
        base_model, lora_weights = tuned_model(lora_weights, base_model)
        check_template_family(lora_weights or base_model, prompt_template_name)
        if lora_weights is not None:
            check_adapter_source(lora_weights)
        self.tokenizer = models.load_tokenizer(tokenizer_source(lora_weights, base_model))
        self.tokenizer.padding_side = "left"
        self.prompter.bind(self.tokenizer)
        check_device_map(device_map)
        model = models.load_model(base_model, quantization, device_map=device_map)
        if lora_weights is not None:
            model = load_adapter(model, lora_weights, base_model)
            if merge:
                model = model.merge_and_unload()
        model.eval()
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        # Stop at the EOS that training taught (the tokenizer's) as well as the model's own.
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops]) - {None}
        # A chat template's turn may end with a token of its own (Gemma's <end_of_turn>), which training taught.
        model.generation_config.eos_token_id = sorted(stops | {self.tokenizer.eos_token_id, self.prompter.turn_end} - {None})
        self.model = model

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prompt(self, instruction: str, input: str = "", cot: bool = False) -> str:
        if not isinstance(instruction, str) or not instruction.strip():
            raise UserError("the instruction is empty")
        return self.prompter.prompt(with_cot(instruction) if cot else instruction, input or "")

    def ids(self, prompt) -> list[int]:
        """A prompt's ids: a text prompt is encoded as training encoded it; a list of ids (a conversation,
        from preprocess.prompt_ids) is used as it is."""
        return list(prompt) if isinstance(prompt, (list, tuple)) else encode_prompt(self.tokenizer, prompt, self.prompter)

    def _batch(self, prompts: list) -> dict:
        ids = [self.ids(p) for p in prompts]
        longest = max(map(len, ids))
        if self.compile:
            longest = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (longest - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (longest - len(x)) + [1] * len(x) for x in ids], device=self.device)
        return {"input_ids": input_ids, "attention_mask": mask}

    def _decoding(self, decoding: dict) -> dict:
        if self.prompter.stop:  # ends a row's decoding early; the text is cut in Prompter.answer
            decoding = {"stop_strings": [self.prompter.stop], "tokenizer": self.tokenizer, **decoding}
        if self.compile and decoding.get("num_beams", 1) == 1:
            return {"cache_implementation": "static", **decoding}
        return decoding

    def check_fits(self, prompts: list[str], max_new_tokens: int, what: str = "the instruction"):
        """A one-line error, before generating, for a prompt that with max_new_tokens exceeds the context."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        if not context:
            return
        for i, prompt in enumerate(prompts):
            length = len(self.ids(prompt))
            if length + max_new_tokens > context:
                where = what if len(prompts) == 1 else f"{what} {i}"
                raise UserError(f"{where} is {length} tokens with the prompt template; with --max_new_tokens "
                                f"{max_new_tokens} that exceeds the model's context of {context} tokens")

    def generate(self, prompts: list[str], **decoding) -> list[str]:
        """Answers for a batch of prompts (left-padded), in order."""
        return [answer for answer, _, _ in self.complete(prompts, **decoding)]

    @torch.inference_mode()
    def complete(self, prompts: list[str], **decoding) -> list[tuple[str, bool, int]]:
        """(answer, finished, tokens generated) for a batch of prompts: finished when the model ended the answer
        itself (EOS, or the template's next turn), not the --max_new_tokens limit."""
        self.check_fits(prompts, decoding.get("max_new_tokens", 0))
        batch = self._batch(prompts)
        out = self.model.generate(**batch, **self._decoding(decoding))
        new = out[:, batch["input_ids"].shape[1]:]
        stops = set(self.model.generation_config.eos_token_id)
        results = []
        for row in new.tolist():
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            answer = self.prompter.answer(text)
            ended = next((i for i, t in enumerate(row) if t in stops), None)
            made = row if ended is None else row[:ended + 1]
            results.append((answer, ended is not None or answer != text.strip(),
                            sum(t != self.tokenizer.pad_token_id or t in stops for t in made)))
        return results

    def stream(self, prompt: str, **decoding):
        """Yields the answer piece by piece as tokens come (greedy or sampling; not beams). Stopping early
        (Ctrl-C, or the caller leaving the loop) stops the worker thread before this returns."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        self.check_fits([prompt], decoding.get("max_new_tokens", 0))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        decoding = dict(decoding, stopping_criteria=StoppingCriteriaList([lambda ids, scores, **kw: stop.is_set()]))
        batch = self._batch([prompt])
        errors = []
        worker = threading.Thread(target=self._generate_into, args=(batch, streamer, decoding, errors), daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:  # a thread left running inside torch at exit aborts the interpreter
            stop.set()
            worker.join()
        if errors:  # raised in the worker: re-raise here rather than wait forever for tokens
            raise errors[0]

    @torch.inference_mode()
    def _generate_into(self, batch, streamer, decoding, errors):
        try:
            self.model.generate(**batch, streamer=streamer, **self._decoding(decoding))
        except BaseException as e:
            errors.append(e)
            streamer.end()  # unblocks the consumer
