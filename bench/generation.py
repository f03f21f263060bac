"""Batched generation vs one prompt at a time, in new tokens per second.

    python bench/generation.py                 # 64 prompts, 32 new tokens, batch 32, 3 repeats
    python bench/generation.py --quick         # 16 prompts, 16 new tokens, 1 repeat
    python bench/generation.py --prompts 64 --repeats 5 --batch-size 64 --profile

The model is the default experiment's: bundled SmolLM2-135M-Instruct, 4-bit NF4 + LoRA
(`cached_lora_model(from_run_config({}).model, 0)`), greedy, through `fedsafe.generation.generate`
(the path attacks, post-hoc and evaluation use). Prompts are the bundled held-out harmful and
benign eval instructions, alternating. Each mode is timed `--repeats` times after one warmup
call; reported: median seconds and new tokens/s (non-pad tokens after the prompt, counted by
`GenerationStats`), and the ratio batched / one-at-a-time. Target: >= 5x.

`--profile` also times single forward passes (a prefill, then one-token decode steps with a
KV cache) at batch 1 and at the batch size: it shows where batching stops paying off.

What it measured on a 2-core CPU (bitsandbytes 0.50, torch 2.13): a 4-bit CPU linear layer
dequantizes its whole weight to fp32 on every call (~0.5 ms per layer, 210 layers), whatever the
batch, so a batch amortizes it; that is where the speed-up comes from. On a CPU shared with
other busy processes, 2 torch threads made every op wait for a descheduled worker thread (a
decode step 20x slower than with 1 thread): run it on a quiet machine, or with `--threads 1`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
from common import report, timeit  # noqa: E402

TARGET = 5.0


def prompts(n: int) -> list[str]:
    from fedsafe import data

    harmful = [p["instruction"] for p in data.bundled("harmful_eval")]
    benign = [p["instruction"] for p in data.bundled("helpful_eval")]
    mixed = [p for pair in zip(harmful, benign) for p in pair]
    return [mixed[i % len(mixed)] for i in range(n)]


def measure(model, tokenizer, texts: list[str], batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    from fedsafe.generation import GenerationSettings, GenerationStats, generate

    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    stats = GenerationStats()
    seconds = timeit(lambda: generate(model, tokenizer, texts, settings, stats=stats), repeats=repeats, warmup=0)
    tokens = stats.new_tokens / repeats  # greedy: the same answers every repeat
    return {"seconds": seconds, "new_tokens": tokens, "tokens_per_second": tokens / seconds}


def profile_steps(model, tokenizer, texts: list[str], batch_size: int, steps: int = 8) -> list[list]:
    """Median ms of one prefill and of one cached decode step, at batch 1 and at `batch_size`.
    The prefill computes logits at every position (generate keeps only the last): an upper bound."""
    import torch

    from fedsafe.data import chat_prompt

    rows = []
    for b in (1, batch_size):
        tokenizer.padding_side = "left"
        enc = tokenizer([chat_prompt(tokenizer, t) for t in texts[:b]], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        with torch.no_grad():
            prefill = timeit(lambda: model(**enc, use_cache=True), repeats=3)
            out = model(**enc, use_cache=True)
            cache, mask = out.past_key_values, enc["attention_mask"]
            token = out.logits[:, -1:].argmax(-1)  # (b, 1)
            times = []
            for _ in range(steps):
                mask = torch.cat([mask, torch.ones_like(token)], dim=1)
                start = time.perf_counter()
                out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
                times.append(time.perf_counter() - start)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode = sorted(times)[len(times) // 2]
        rows.append([f"forward b={b}", b, enc["input_ids"].shape[1], 1e3 * prefill, 1e3 * decode,
                     b / decode])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="16 prompts, 16 new tokens, 1 repeat")
    parser.add_argument("--profile", action="store_true", help="also time prefill and decode steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_new_tokens, args.repeats = 16, 16, 1

    import torch

    from fedsafe import models
    from fedsafe.config import from_run_config
    from fedsafe.generation import GenerationSettings, generate

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = from_run_config({})
    started = time.perf_counter()
    model = models.cached_lora_model(settings.model, 0)
    tokenizer = models.cached_tokenizer(settings.model)
    load = time.perf_counter() - started
    texts = prompts(args.prompts)
    generate(model, tokenizer, texts[:4], GenerationSettings(max_new_tokens=4, batch_size=4))  # warmup

    batched = measure(model, tokenizer, texts, args.batch_size, args.max_new_tokens, args.repeats)
    single = measure(model, tokenizer, texts, 1, args.max_new_tokens, args.repeats)
    ratio = batched["tokens_per_second"] / single["tokens_per_second"]
    header = ["mode", "batch size", "prompts", "new tokens", "median s", "tokens/s"]
    rows = [[name, b, args.prompts, round(m["new_tokens"]), m["seconds"], m["tokens_per_second"]]
            for name, b, m in (("batched", args.batch_size, batched), ("one at a time", 1, single))]
    report_rows = rows
    if args.profile:
        print("per forward pass (ms): mode, batch, prompt tokens, prefill, decode step, decode tokens/s")
        for row in profile_steps(model, tokenizer, texts, args.batch_size):
            print("  " + "  ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row))
    print(f"model load {load:.1f} s; {args.prompts} prompts x {args.max_new_tokens} new tokens max; "
          f"torch threads {torch.get_num_threads()}; device {models.device()}; "
          f"ratio batched / one at a time: {ratio:.2f}x (target >= {TARGET:.0f}x)")
    report("generation", header, report_rows, {
        "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "repeats": args.repeats, "batched_tokens_per_s": round(batched["tokens_per_second"], 2),
        "single_tokens_per_s": round(single["tokens_per_second"], 2), "ratio": round(ratio, 2),
        "target": TARGET, "met": ratio >= TARGET,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
