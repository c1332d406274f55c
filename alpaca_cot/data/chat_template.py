"""A tokenizer's own chat template as training needs it (`--prompt_template_name chat`, preprocess.Prompter):
the conversation rendered by the template and cut into prompt and answer pieces, and the special token
that ends an assistant's turn, which training teaches and generation stops at.
"""

from alpaca_cot.cli import UserError


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except (TemplateError, ValueError) as e:
        raise UserError(f"the chat template of {tokenizer.name_or_path} fails to render a conversation: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def turns(tokenizer, history: list, question: str, answer: str) -> tuple[list[str], list[str]]:
    """The rendered conversation cut into (prompt, answer) pieces whose concatenation is the whole text: each
    prompt up to the assistant's turn, each answer up to and with its end-of-turn token (what the template
    writes after that opens the next prompt)."""
    messages = []
    for user, assistant in [*history, (question, answer)]:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    prompts, answers, done = [], [], ""
    for k in range(0, len(messages), 2):
        asked, said = render(tokenizer, messages[:k + 1], True), render(tokenizer, messages[:k + 2], False)
        if not (asked.startswith(done) and said.startswith(asked)):
            raise UserError(f"the chat template of {tokenizer.name_or_path} does not render a conversation as the "
                            "start of its continuation, so its turns cannot be masked; use alpaca")
        prompts.append(asked[len(done):])
        answers.append(said[len(asked):])
        done = said
    for k, said in enumerate(answers):
        answers[k] = said.rstrip()
        if k + 1 < len(prompts):
            prompts[k + 1] = said[len(answers[k]):] + prompts[k + 1]
    return prompts, answers


def turn_end(tokenizer, template_name: str = "chat") -> int:
    """The special token the template writes after an assistant's answer (its last one there)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--prompt_template_name {template_name}: the tokenizer of "
                        f"{getattr(tokenizer, 'name_or_path', 'this model')} has no chat template; use alpaca")
    after = turns(tokenizer, [], "x", "")[1][-1]
    ends = [t for t in tokenizer(after, add_special_tokens=False)["input_ids"] if t in tokenizer.all_special_ids]
    if not ends:
        raise UserError(f"the chat template of {tokenizer.name_or_path} writes no special token after an assistant's "
                        "answer, so a tuned model could not learn where to stop; use alpaca")
    return ends[-1]
