"""New tokens per second of fedsafe's generation against the path of main before issue #24, in
one run, on the same prompts. Target: >= 3x, with the same greedy answers.

    python bench/generation.py                 # 64 prompts, 32 new tokens, batch 32, 3 repeats
    python bench/generation.py --quick         # 16 prompts, 16 new tokens, 1 repeat
    python bench/generation.py --single 8      # also 8 prompts one at a time
    python bench/generation.py --adapter RUN_DIR/adapters/round-007 --threads 1
    python bench/generation.py --model tiny    # the tests' tiny random Llama: a quick check

Paths, all through `fedsafe.generation.generate`, greedy, the default experiment's model
(bundled SmolLM2-135M-Instruct, 4-bit NF4 + LoRA with the initial adapter unless `--adapter`):
- `main`: the 4-bit model as the clients hold it, prompts left-padded whole (`share_prefix=False`),
  which is what the server ran before.
- `dense`: the server's copy (4-bit layers dequantized once, fedsafe/dense.py), same layout.
- `fedsafe`: the dense copy with the prompts' shared first tokens run once (the default).
Each path runs once untimed, then `--repeats` times, the paths taking turns so a change in the
machine's load hits all of them; reported are median wall and CPU seconds (process time over all
threads: on a shared CPU it moves less than wall time) and new tokens per second of each, the
ratios against `main`, and how many answers equal `main`'s word for word.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, report, tiny_model  # noqa: E402

TARGET = 3.0


def prompts(n: int) -> list[str]:
    from fedsafe import data

    harmful = [p["instruction"] for p in data.bundled("harmful_eval")]
    benign = [p["instruction"] for p in data.bundled("helpful_eval")]
    mixed = [p for pair in zip(harmful, benign) for p in pair]
    return [mixed[i % len(mixed)] for i in range(n)]


def paths(settings, adapter: Path | None) -> dict:
    """name -> (model, share_prefix), every model with the same adapter."""
    from fedsafe import models

    quantized = models.cached_lora_model(settings.model, settings.seed)
    dense = models.cached_lora_model(settings.model, settings.seed, dense=True)
    state = models.load_adapter_file(adapter) if adapter else models.initial_adapter(settings.model, settings.seed)
    for model in (quantized, dense):
        models.set_adapter_state(model, state)
    return {"main": (quantized, False), "dense": (dense, False), "fedsafe": (dense, True)}


def measure(runs: dict, tokenizer, texts: list[str], batch_size: int, new_tokens: int, repeats: int) -> dict:
    """name -> {wall_s, cpu_s, new_tokens, answers}: medians over `repeats` turns."""
    from fedsafe.generation import GenerationSettings, GenerationStats, generate

    times = {name: ([], []) for name in runs}
    out = {}
    for turn in range(repeats + 1):  # turn 0: untimed warmup of every path
        for name, (model, share) in runs.items():
            settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size, share_prefix=share)
            stats = GenerationStats()
            wall, cpu = time.perf_counter(), time.process_time()
            answers = generate(model, tokenizer, texts, settings, stats=stats)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if turn:
                times[name][0].append(wall)
                times[name][1].append(cpu)
            print(f"# batch {batch_size} turn {turn} {name}: {stats.new_tokens} new tokens, {wall:.1f} s wall, "
                  f"{cpu:.1f} s CPU", file=sys.stderr, flush=True)
            out[name] = {"new_tokens": stats.new_tokens, "answers": answers}
    for name, (walls, cpus) in times.items():
        out[name].update(wall_s=statistics.median(walls), cpu_s=statistics.median(cpus))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single", type=int, default=0, help="also this many prompts one at a time")
    parser.add_argument("--quick", action="store_true", help="16 prompts, 16 new tokens, 1 repeat")
    parser.add_argument("--adapter", type=Path, default=None, help="a PEFT adapter folder of a run")
    parser.add_argument("--model", choices=("bundled", "tiny"), default="bundled")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_new_tokens, args.repeats = 16, 16, 1

    import torch

    from fedsafe import models
    from fedsafe.config import from_run_config

    if args.threads:
        torch.set_num_threads(args.threads)
    before = machine()
    overrides = {}
    if args.model == "tiny":
        folder = tiny_model(Path(tempfile.mkdtemp(prefix="fedsafe-bench-tiny-")))
        overrides = {"model.name": str(folder), "model.lora.target-modules": "q_proj,v_proj", "model.lora.r": 4}
    settings = from_run_config(overrides, check_aggregator=False)
    started = time.perf_counter()
    runs = paths(settings, args.adapter)
    tokenizer = models.cached_tokenizer(settings.model)
    load = time.perf_counter() - started

    shapes = [("batched", args.prompts, args.batch_size)] + ([("one at a time", args.single, 1)] if args.single else [])
    rows, figures = [], {}
    for mode, n, batch in shapes:
        result = measure(runs, tokenizer, prompts(n), batch, args.max_new_tokens, args.repeats)
        base = result["main"]
        for name, m in result.items():
            same = sum(a == b for a, b in zip(m["answers"], base["answers"]))
            rows.append([mode, name, batch, m["new_tokens"], m["wall_s"], m["new_tokens"] / m["wall_s"],
                         base["wall_s"] / m["wall_s"], m["cpu_s"], base["cpu_s"] / m["cpu_s"], f"{same}/{n}"])
            figures.setdefault(mode.replace(" ", "_"), {})[name] = {
                "tokens_per_s": round(m["new_tokens"] / m["wall_s"], 2), "wall_s": round(m["wall_s"], 2),
                "cpu_s": round(m["cpu_s"], 2), "ratio_wall": round(base["wall_s"] / m["wall_s"], 2),
                "ratio_cpu": round(base["cpu_s"] / m["cpu_s"], 2), "same_answers": same, "prompts": n}
    ratio = figures["batched"]["fedsafe"]["ratio_wall"]
    after = machine()
    print(f"model {args.model} (load {load:.1f} s); {args.max_new_tokens} new tokens max; torch threads "
          f"{torch.get_num_threads()}; {before['cores']} cores, load {before['load_1m']} -> {after['load_1m']}; "
          f"batched fedsafe / main: {ratio:.2f}x wall, {figures['batched']['fedsafe']['ratio_cpu']:.2f}x CPU "
          f"(target >= {TARGET:.0f}x)")
    report("generation", ["mode", "path", "batch", "new tokens", "wall s", "tokens/s", "x main", "CPU s",
                          "x main CPU", "same as main"], rows, {
        **figures, "model": args.model, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "machine": before, "load_after": after["load_1m"],
        "ratio": ratio, "target": TARGET, "met": ratio >= TARGET,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
