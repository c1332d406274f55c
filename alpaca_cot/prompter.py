"""The prompt template: one small class over a data file in templates/.

Training (to mask the prompt out of the loss) and generation (to build the same
prompt) both go through `Prompter.prompt`, so the two can never drift apart.
"""

import json

from . import TEMPLATES_DIR
from .cli import UserError


# What every template holds: the prompt with and without an input, with {instruction} (and {input}).
REQUIRED = ("prompt_input", "prompt_no_input")


class Prompter:
    def __init__(self, template_name: str = "alpaca"):
        path = TEMPLATES_DIR / f"{template_name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in TEMPLATES_DIR.glob("*.json"))
            raise UserError(f"unknown prompt template {template_name!r} ({path} not found); known: {', '.join(known)}")
        self.name = template_name
        try:
            self.template = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg}; line {e.lineno})") from None
        missing = [k for k in REQUIRED if not isinstance(self.template.get(k), str)]
        if missing:
            raise UserError(f"{path}: prompt template without {', '.join(repr(k) for k in missing)}")

    def prompt(self, instruction: str, input: str = "") -> str:
        """The text the model sees before its response."""
        # str.replace, not str.format: user text may hold braces.
        if input:
            text = self.template["prompt_input"].replace("{input}", input)
        else:
            text = self.template["prompt_no_input"]
        return text.replace("{instruction}", instruction, 1)

    @property
    def stop(self) -> str | None:
        """The text a model writes when it starts a new turn of its own: no part of an answer."""
        return self.template.get("stop")

    def answer(self, generated: str) -> str:
        """The answer in generated text: up to the template's stop marker, stripped."""
        if self.stop:
            generated = generated.split(self.stop, 1)[0]
        return generated.strip()
