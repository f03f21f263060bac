"""Prompt templates (`model.template`) on a base model's tokenizer, which has no chat template:
the paper's Alpaca text, EOS-closed training examples, generation, a whole federation, and
custom Jinja files."""

import pytest

from fedsafe import data, models
from fedsafe.config import ConfigError, from_run_config
from fedsafe.generation import GenerationSettings, generate

# The Alpaca text of the paper's code (utils/template.py), cut after "### Response:" as its
# generation script cuts it; <|im_start|> is the tiny base tokenizer's BOS.
ALPACA_PROMPT = (
    "<|im_start|>Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\nWhat is the capital of France? \n\n### Response:"
)
PAIR = data.Pair(instruction="What is the capital of France?", response="The capital of France is Paris.")
CUSTOM = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def test_auto_falls_back_to_the_papers_alpaca_template(tiny_base_model_dir):
    tok = models.load_tokenizer(str(tiny_base_model_dir))
    assert data.chat_prompt(tok, PAIR["instruction"]) == ALPACA_PROMPT
    # a system message takes the preamble's place
    assert data.chat_prompt(tok, "Hi.", system="Answer briefly.") == (
        "<|im_start|>Answer briefly.\n\n### Instruction:\nHi. \n\n### Response:")
    assert data.end_of_turn(tok) == "<eos>"


def test_alpaca_training_examples_open_with_a_space_and_end_with_eos(tiny_base_model_dir):
    tok = models.load_tokenizer(str(tiny_base_model_dir), template="alpaca")
    (ex,) = data.tokenize_pairs(tok, [PAIR], seq_length=256)
    answer = [t for t in ex["labels"] if t != data.IGNORE_INDEX]
    assert ex["labels"][-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<eos>")
    assert tok.decode(answer) == " The capital of France is Paris.<eos>"
    prompt_ids = tok(ALPACA_PROMPT, add_special_tokens=False)["input_ids"]
    assert ex["input_ids"][: len(prompt_ids)] == prompt_ids and prompt_ids[0] == tok.bos_token_id
    assert ex["input_ids"][len(prompt_ids):] == answer  # the loss covers exactly what follows the prompt
    (opening,) = data.tokenize_pairs(tok, [PAIR], seq_length=256, close_turn=False)
    assert opening["labels"][-1] != tok.eos_token_id


def test_generate_on_a_base_model(tiny_base_model_dir):
    settings = from_run_config({"model.name": str(tiny_base_model_dir), "model.quantization": 0})
    tok = models.load_tokenizer(settings.model.name, template=settings.model.template)
    model = models.load_base_model(settings.model)
    answers = generate(model, tok, ["Name three famous composers.", "Hi."], GenerationSettings(max_new_tokens=4))
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_chat_on_a_tokenizer_without_one_fails_in_one_line(tiny_base_model_dir, tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        models.load_tokenizer(str(tiny_base_model_dir), template="chat")
    message = str(err.value)
    assert "\n" not in message and "model.template='chat'" in message and str(tiny_base_model_dir) in message
    chat = models.load_tokenizer(str(tiny_model_dir), template="chat")  # a ChatML tokenizer keeps its own
    assert data.chat_prompt(chat, "hi").endswith("<|im_start|>assistant\n")


def test_a_custom_jinja_file_is_used(tiny_model_dir, tmp_path):
    path = tmp_path / "template.jinja"
    path.write_text(CUSTOM)
    settings = from_run_config({"model.name": str(tiny_model_dir), "model.template": str(path)})
    tok = models.cached_tokenizer(settings.model)
    assert data.chat_prompt(tok, "Say hi.") == "[user] Say hi.\n[assistant] "
    (ex,) = data.tokenize_pairs(tok, [PAIR], seq_length=256)
    assert tok.decode([t for t in ex["labels"] if t != data.IGNORE_INDEX]) == "The capital of France is Paris.<|im_end|>"


def test_template_values_are_checked(tmp_path, tiny_model_dir):
    for value in ("chatml", str(tmp_path / "missing.jinja"), str(tmp_path)):
        with pytest.raises(ConfigError, match="model.template"):
            from_run_config({"model.template": value})
    (tmp_path / "empty.jinja").write_text("  \n")
    with pytest.raises(ConfigError, match="not empty"):
        from_run_config({"model.template": str(tmp_path / "empty.jinja")})
    # a file whose answer does not follow its generation prompt fails when the tokenizer loads
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                                        "{% if add_generation_prompt %}ANSWER:{% endif %}")
    with pytest.raises(ConfigError, match="generation prompt"):
        models.load_tokenizer(str(tiny_model_dir), template=str(tmp_path / "bad.jinja"))


def test_federation_on_a_base_model_with_auto(tiny_base_model_dir, tmp_path):
    """model.template='auto' on a template-less model: clients train on Alpaca text, the server
    probes, evaluates and runs the post-hoc defense with the same template."""
    from fedsafe.client import client_examples, settings_from
    from fedsafe.files import read_jsonl
    from tests.test_federation import run_federation, tiny_run_config

    config = tiny_run_config(tiny_base_model_dir, tmp_path / "runs", **{
        "posthoc.enabled": True, "posthoc.steps": 2, "posthoc.num-samples": 4,
        "train.seq-length": 192})  # room for the Alpaca preamble in the tiny byte-level tokenizer
    run_dir, results, _ = run_federation(config, 3)

    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert all(r["safety_probe"] is not None for r in results["rounds"])
    loss = [sum(c["train_loss"] for c in r["clients"]) / 3 for r in results["rounds"]]
    assert loss[1] < loss[0]
    assert set(results["eval"]) == {"initial", "after_fl", "after_posthoc"}
    rows = read_jsonl(run_dir / "eval" / "after_posthoc.jsonl")
    assert rows and all(isinstance(r["response"], str) for r in rows)

    settings = settings_from(config)
    tok = models.cached_tokenizer(settings.model)
    examples = client_examples(settings, 0)
    assert all(tok.decode(e["input_ids"]).startswith("<|im_start|>Below is an instruction") for e in examples)
    whole = [e for e in examples if len(e["input_ids"]) < settings.train.seq_length]  # not truncated
    assert whole and all(e["labels"][-1] == tok.eos_token_id for e in whole)
