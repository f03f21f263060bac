"""The default experiment and a 7B-shaped model on a GPU: seconds per round, new tokens per
second and peak GPU memory. Downloads nothing.

    python bench/gpu.py                # on a CUDA machine: both parts (the 7B part writes ~14 GB to --dir)
    python bench/gpu.py --skip-7b      # the default experiment only
    python bench/gpu.py --tiny         # anywhere, CPU included: the same code on tiny models (a minute)

1. The default experiment (the bundled SmolLM2-135M-Instruct, 4-bit NF4 + LoRA, the defaults of
   pyproject.toml) as one process: the real ServerApp and ClientApp over an in-process grid
   (tests/inprocess.py), so clients train one after another on the one GPU; the initial
   evaluation is computed, not read from the cache. From its results.json: each round's seconds,
   each evaluation's seconds, the attack data's generation; peak GPU memory of the process.
   Then the server's model generates answers to the held-out prompts: new tokens per second.
2. A 7B-shaped Llama (Llama-2-7B's layers, heads and MLP width; the bundled tokenizer's
   vocabulary) built from random weights on the machine and saved as a local folder, loaded the
   way a client loads `model.name = FOLDER` (4-bit NF4 + LoRA r=16 on q,k,v,o): load seconds,
   seconds per training step and per client round (`train.local-steps` steps of
   `train.batch-size` x `train.seq-length` tokens), generation tokens per second, peak memory.

`--tiny` swaps in the tests' tiny random Llama for the bundled model (2 rounds, 3 clients, small
evaluations) and a 2-layer, 64-wide "7B" on whatever device there is: it checks the script, its
numbers mean nothing. The last line is the JSON of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(ROOT))  # this checkout's fedsafe, and tests.inprocess
from common import machine, report, tiny_model  # noqa: E402

import torch  # noqa: E402

SEVEN_B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32}  # Llama-2-7B
TINY_7B = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 4}
TINY_RUN = {"num-server-rounds": 2, "clients.num": 3, "clients.per-round": 3, "attack.num-malicious": 1,
            "attack.data": str(ROOT / "fedsafe" / "data" / "helpful_train.jsonl"),  # any pairs: plumbing only
            "model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj", "train.local-steps": 2,
            "train.seq-length": 96, "eval.safety.limit": 4, "eval.benign.limit": 4, "eval.max-new-tokens": 4,
            "posthoc.steps": 2, "posthoc.num-samples": 4}


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def experiment(run_config: dict) -> dict:
    """The whole default flow in this process; its results.json, peak memory and wall time."""
    from flwr.app import Context, RecordDict

    from fedsafe.client_app import app as client_app
    from fedsafe.server_app import app as server_app
    from tests.inprocess import InProcessGrid

    reset_peak()
    started = time.perf_counter()
    grid = InProcessGrid(client_app, run_config, run_config.get("clients.num", 10))
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    wall = time.perf_counter() - started
    (run_dir,) = [p.parent for p in Path(run_config["output-dir"]).glob("*/results.json")]
    results = json.loads((run_dir / "results.json").read_text())
    rounds = [r["seconds"] for r in results["rounds"]]
    return {"wall_s": round(wall, 1), "rounds_s": rounds, "round_1_s": rounds[0],
            "later_round_s": round(sum(rounds[1:]) / max(len(rounds) - 1, 1), 2),
            "eval_s": {k: v.get("seconds") for k, v in results["eval"].items()},
            "attack_data_s": (results.get("attack_data") or {}).get("seconds"),
            "timings": results["timings"], "peak_gpu_gb": peak_gb(), "run_dir": str(run_dir)}


def generation_speed(model, tokenizer, prompts: int, new_tokens: int, batch_size: int = 32) -> dict:
    from fedsafe import data
    from fedsafe.generation import GenerationSettings, GenerationStats, generate

    pool = [p["instruction"] for p in data.bundled("harmful_eval") + data.bundled("helpful_eval")]
    texts = [pool[i % len(pool)] for i in range(prompts)]
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size)
    generate(model, tokenizer, texts[:2], GenerationSettings(max_new_tokens=2))  # warmup
    reset_peak()
    stats = GenerationStats()
    generate(model, tokenizer, texts, settings, stats=stats)
    return {"prompts": prompts, "new_tokens": stats.new_tokens, "seconds": round(stats.seconds, 2),
            "tokens_per_s": round(stats.tokens_per_second, 1), "peak_gpu_gb": peak_gb()}


def build_random_llama(folder: Path, shape: dict, tokenizer_dir: Path) -> int:
    """A Llama of `shape` with random weights, saved as a model folder with the given tokenizer;
    returns its parameter count. Built on the GPU when there is one (fast init), in bf16 there."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**shape, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return count


def seven_b(folder: Path, shape: dict, tokenizer_dir: Path, run_overrides: dict, prompts: int, new_tokens: int) -> dict:
    from fedsafe import data, models
    from fedsafe.config import from_run_config
    from fedsafe.training import sft

    started = time.perf_counter()
    params = build_random_llama(folder, shape, tokenizer_dir)
    built = time.perf_counter() - started
    settings = from_run_config({**run_overrides, "model.name": str(folder)}, check_aggregator=False)
    reset_peak()
    started = time.perf_counter()
    model = models.add_lora(models.load_base_model(settings.model), settings.model, seed=0)
    tokenizer = models.load_tokenizer(str(folder))
    load = time.perf_counter() - started
    after_load = peak_gb()
    pairs = data.bundled("helpful_train")[: 4 * settings.train.batch_size]
    examples = data.tokenize_pairs(tokenizer, pairs, settings.train.seq_length)
    steps = settings.train.local_steps
    sft(model, examples, steps=1, batch_size=settings.train.batch_size, lr=1e-4, seed=0,
        pad_id=tokenizer.pad_token_id)  # warmup
    reset_peak()
    result = sft(model, examples, steps=steps, batch_size=settings.train.batch_size, lr=1e-4, seed=0,
                 pad_id=tokenizer.pad_token_id)
    train_peak = peak_gb()
    return {"parameters": params, "build_s": round(built, 1), "load_s": round(load, 1),
            "peak_gpu_gb_after_load": after_load, "seconds_per_step": round(result.seconds / steps, 3),
            "seconds_per_client_round": round(result.seconds, 2), "local_steps": steps,
            "batch": [settings.train.batch_size, settings.train.seq_length], "peak_gpu_gb_training": train_peak,
            "generation": generation_speed(model, tokenizer, prompts, new_tokens)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models, any device: checks the script")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="runs and the 7B folder go here (default: a temp dir)")
    parser.add_argument("--prompts", type=int, default=64, help="generation: prompts (batch 32)")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --tiny to check the script on this machine")
    if args.tiny:
        args.prompts, args.new_tokens = min(args.prompts, 8), min(args.new_tokens, 8)

    from fedsafe import models
    from fedsafe.config import defaults, from_run_config

    root = Path(args.dir or tempfile.mkdtemp(prefix="fedsafe-bench-gpu-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = machine()
    run_config = {**defaults(), "output-dir": str(root / "runs"), "eval.initial-cache": False}
    if args.tiny:
        run_config.update(TINY_RUN, **{"model.name": str(tiny_model(root / "tiny-model"))})
    figures = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "tiny": args.tiny, "machine": before}
    figures["experiment"] = experiment(run_config)
    settings = from_run_config(run_config)
    server_model = models.cached_lora_model(settings.model, settings.seed, models.server_dense(settings.model))
    tokenizer = models.cached_tokenizer(settings.model)
    figures["experiment"]["generation"] = generation_speed(server_model, tokenizer, args.prompts, args.new_tokens)
    if not args.skip_7b:
        folder = root / "llama-7b-shaped"
        tokenizer_dir = Path(models.resolve_model_path(settings.model.name))
        overrides = {k: run_config[k] for k in run_config if k.startswith(("train.", "model.lora."))}
        figures["7b"] = seven_b(folder, TINY_7B if args.tiny else SEVEN_B, tokenizer_dir, overrides,
                                args.prompts, args.new_tokens)
        shutil.rmtree(folder, ignore_errors=True)
    e = figures["experiment"]
    rows = [["experiment", "later round s", e["later_round_s"]], ["experiment", "round 1 s", e["round_1_s"]],
            *[["experiment", f"eval {k} s", v] for k, v in e["eval_s"].items()],
            ["experiment", "generation tokens/s", e["generation"]["tokens_per_s"]],
            ["experiment", "peak GPU GiB", e["peak_gpu_gb"] if e["peak_gpu_gb"] is not None else "-"]]
    if "7b" in figures:
        s = figures["7b"]
        rows += [["7B-shaped", "parameters", s["parameters"]], ["7B-shaped", "load s", s["load_s"]],
                 ["7B-shaped", "seconds per step", s["seconds_per_step"]],
                 ["7B-shaped", "seconds per client round", s["seconds_per_client_round"]],
                 ["7B-shaped", "generation tokens/s", s["generation"]["tokens_per_s"]],
                 ["7B-shaped", "peak GPU GiB training", s["peak_gpu_gb_training"] or "-"]]
    print(f"{figures['device']}; runs in {root}; load {before['load_1m']} -> {machine()['load_1m']}")
    report("gpu", ["part", "figure", "value"], rows, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
