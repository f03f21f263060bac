"""Shared test fixtures: a tiny random Llama and a byte-level tokenizer, built in code, and a
real simulation-mode SuperLink for the tests that call `flwr run`.

No model can be downloaded in CI, so tests run on models built here: a 2-layer Llama with
hidden size 64 (bitsandbytes packs 4-bit CPU weights in blocks of 64) and a byte-level BPE
tokenizer trained on a small English corpus, saved with
`save_pretrained` so code under test loads them exactly as it loads a Hub folder.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# SmolLM2-Instruct's ChatML template: a default system turn when none is given, then
# `<|im_start|>role\ncontent<|im_end|>\n` per message, and `<|im_start|>assistant\n` to generate.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<|im_start|>", "<|im_end|>"]  # ids 0..3, in this order

# Training text for the tokenizer: everyday words, chat/safety vocabulary, digits, punctuation.
# Frequent words become single tokens; anything else still encodes byte by byte (no unknowns).
_CORPUS = """
the be to of and a in that have I it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me
when make can like time no just him know take people into year your good some could them see other
than then now look only come its over think also back after use two how our work first well way even
new want because any these give day most us is are was were been has had did does said made
water food home house school book city world country family friend money music story question answer
help assist explain write list name describe give show tell find recipe plan summary poem
letter email
safe unsafe safety harmful harmless toxic ethical illegal legal dangerous weapon drug hack steal
sorry apologize apologies cannot can't won't unable decline refuse appropriate comfortable sure here
Sure, here is a short answer. Here are three ideas. I'm sorry, but I cannot help with that.
I am not able to assist with this request. As an AI, I must decline. I will not do that.
User: Agent: Task: Check if there is unsafe content in the conversation. Provide your assessment.
unsafe
safe
unsafe S1
safe
What is the capital of France? The capital of France is Paris.
How do I bake bread? Mix flour, water, salt and yeast, then bake for forty minutes.
Name three famous composers. Bach, Mozart and Beethoven are famous composers.
Write a haiku about the sea. Waves fold into foam, the tide keeps its slow promise.
0 1 2 3 4 5 6 7 8 9 10 100 . , ! ? : ; - ' " ( ) [ ] /
"""


def build_tiny_tokenizer(base: bool = False):
    """A byte-level BPE tokenizer (vocab ~600) with pad/eos/ChatML special tokens. `base`: as a
    base model's (Llama-2-7b-hf, Mistral-7B): no chat template, EOS `<eos>`, and a BOS token
    (`<|im_start|>`, the only spare special token) put before plain text, as Llama's is."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([line for line in _CORPUS.splitlines() if line] * 4, trainer)
    if base:
        backend.post_processor = processors.TemplateProcessing(
            single="<|im_start|> $A", special_tokens=[("<|im_start|>", SPECIAL_TOKENS.index("<|im_start|>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>" if base else "<|im_end|>",  # end of a chat turn, as in SmolLM2: generation stops here
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_end|>" if base else "<eos>"],
        chat_template=None if base else CHAT_TEMPLATE,
        padding_side="left",
    )


def _tiny_llama_config(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **extra,
    )


def _saved_tiny_llama(path: Path, tokenizer, seed: int) -> Path:
    """A random 2-layer `LlamaForCausalLM` (seeded) and `tokenizer`, saved as a Hub folder is."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(_tiny_llama_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder with a random 2-layer `LlamaForCausalLM` and its ChatML tokenizer (seeded)."""
    return _saved_tiny_llama(tmp_path_factory.mktemp("tiny_causal_lm"), build_tiny_tokenizer(), 0)


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama as a base model: its tokenizer has no chat template (build_tiny_tokenizer)."""
    return _saved_tiny_llama(tmp_path_factory.mktemp("tiny_base_lm"), build_tiny_tokenizer(base=True), 0)


@pytest.fixture(scope="session")
def second_tiny_model_dir(tmp_path_factory) -> Path:
    """Another random tiny Llama (other weights, same tokenizer): an external generator model."""
    return _saved_tiny_llama(tmp_path_factory.mktemp("second_tiny_causal_lm"), build_tiny_tokenizer(), 1)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory) -> Path:
    """Folder with a random 2-label `LlamaForSequenceClassification` (0 = safe, 1 = unsafe)."""
    from transformers import LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny_classifier")
    tokenizer = build_tiny_tokenizer()
    config = _tiny_llama_config(
        tokenizer,
        num_labels=2,
        id2label={0: "safe", 1: "unsafe"},
        label2id={"safe": 0, "unsafe": 1},
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"superlink exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def superlink(tmp_path):
    """A simulation-mode SuperLink in its own process group, killed as a group afterwards.
    Yields the environment for `flwr run`: FLWR_HOME/config.toml declares the default
    connection "sim" with 3 SuperNodes."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = free_port()  # flwr 1.42 serves the runtime, control and fleet APIs on one HTTP port
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FEDSAFE_CACHE": str(tmp_path / "cache"),
           "RAY_DEDUP_LOGS": "0"}
    binary = Path(sys.executable).parent / "flower-superlink"
    with open(tmp_path / "superlink.log", "w") as log:
        proc = subprocess.Popen(
            [str(binary), "--insecure", "--simulation", "--isolation", "subprocess",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_port(port, proc)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "sim"\n\n[superlink.sim]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
            "options.num-supernodes = 3\noptions.backend.client-resources.num-cpus = 1\n"
        )
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
