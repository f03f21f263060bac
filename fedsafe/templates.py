"""Prompt templates (`model.template`), installed on the tokenizer as its Jinja chat template.

Every prompt fedsafe builds goes through `tokenizer.apply_chat_template`: training examples,
generation, the behaviour probe, defense data. Installing the resolved template once, where the
tokenizer loads, keeps that the one code path whether the model ships a chat template (instruct
models) or not (base models such as Llama-2-7b-hf, which arXiv 2406.10630 tunes with Alpaca's).
"""

from __future__ import annotations

from pathlib import Path

from fedsafe.config import ConfigError

TEMPLATE_WORDS = ("auto", "chat", "alpaca")

# The Alpaca template of the paper's code (19dx/FedLLM-Attack, utils/template.py, as in
# OpenFedLLM): "{preamble}\n\n### Instruction:\n{instruction} \n\n### Response: {response}{eos}",
# and at generation the same text cut after "### Response:". A system message, when given,
# takes the preamble's place; later exchanges follow the first after its EOS.
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}" + ALPACA_PREAMBLE + "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\n### Instruction:\\n' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\n### Response: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n### Response:' }}{% endif %}"
)
PROBE = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "XYZ"}]


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts plain text with its BOS token (Llama, Mistral do): the paper's
    trainer tokenized the Alpaca text with special tokens, so the template writes BOS then."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    return tokenizer("x")["input_ids"][:1] == [bos] != tokenizer("x", add_special_tokens=False)["input_ids"][:1]


def alpaca_template(tokenizer) -> str:
    return ("{{ bos_token }}" if adds_bos(tokenizer) else "") + ALPACA_TEMPLATE


def install_template(tokenizer, template: str, model_name: str) -> None:
    """Set `tokenizer.chat_template` from `model.template`: 'auto' (the tokenizer's own, else
    alpaca), 'chat' (the tokenizer's own, which must exist), 'alpaca', or a Jinja file."""
    own = bool(tokenizer.chat_template)
    if template == "chat" and not own:
        raise ConfigError(f"model.template='chat': the tokenizer of model.name={model_name!r} has no chat "
                          "template; use 'auto', 'alpaca' or a Jinja template file")
    if template == "alpaca" or template == "auto" and not own:
        tokenizer.chat_template = alpaca_template(tokenizer)
    elif template not in TEMPLATE_WORDS:
        tokenizer.chat_template = Path(template).expanduser().read_text(encoding="utf-8")
        if answer_affixes(tokenizer) is None:
            raise ConfigError(f"model.template={template!r}: a user turn and an answer must render as the user "
                              "turn's generation prompt (add_generation_prompt=true) followed by the answer")


def answer_affixes(tokenizer) -> tuple[str, str] | None:
    """(head, tail): what the template writes between the generation prompt and an assistant
    answer (Alpaca: a space) and after it (its end of turn: '<|im_end|>', EOS); None when a
    rendered answer does not follow the generation prompt."""
    prompt = tokenizer.apply_chat_template(PROBE[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(PROBE, tokenize=False)
    if not full.startswith(prompt) or "XYZ" not in full[len(prompt):]:
        return None
    head, _, tail = full[len(prompt):].partition("XYZ")
    return head, tail.strip()
