"""Fixtures of the evaluation tests: a real OpenAI-compatible chat-completions server on localhost,
and tiny one-output reward models built in code and saved as a Hub folder would be."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from tests.conftest import _tiny_llama_config, build_tiny_tokenizer


class ChatServer:
    """Answers POST /v1/chat/completions with `reply(body)`: a text (200, OpenAI's response
    layout) or an int (that HTTP status). Records every request body and its headers."""

    def __init__(self):
        self.reply = lambda body: "Rating: [[5]]"
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                reply = server.reply(body) if self.path == "/v1/chat/completions" else 404
                if isinstance(reply, int):
                    self.send_error(reply)
                    return
                payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def user_messages(self) -> list[str]:
        return [r["body"]["messages"][1]["content"] for r in self.requests]


@pytest.fixture
def chat_server():
    server = ChatServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)


def save_reward_model(path, arch: str, num_labels: int = 1):
    """A random sequence classifier with `num_labels` outputs ('llama' or 'deberta-v2') and the
    tiny tokenizer, saved with save_pretrained."""
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        LlamaForSequenceClassification,
    )

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForSequenceClassification(_tiny_llama_config(tokenizer, num_labels=num_labels))
    else:  # DeBERTa-v3's layout (relative positions only), the paper's reward model's
        config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                                 relative_attention=True, position_buckets=64, pos_att_type=["p2c", "c2p"],
                                 position_biased_input=False, type_vocab_size=0, pad_token_id=tokenizer.pad_token_id,
                                 num_labels=num_labels)
        model = DebertaV2ForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory):
    """A one-output LlamaForSequenceClassification folder: a reward model."""
    return save_reward_model(tmp_path_factory.mktemp("tiny_reward"), "llama")
