"""A client's memory with 4-bit, 8-bit and no quantization, and the bytes a round moves with LoRA
adapters against exchanging the full model.

    python bench/memory.py                  # bundled SmolLM2-135M, 4 training steps per mode
    python bench/memory.py --model tiny     # the tests' tiny random Llama: quick
    python bench/memory.py --modes 4,0 --steps 8

Memory: each quantization runs in a fresh subprocess that does what a client does: import the
libraries, load the base model (`fedsafe.models.load_base_model`, model.quantization = 4, 8 or 0),
add LoRA, tokenize one client's data and train `--steps` steps with `fedsafe.training.sft` (one
torch thread, as a Ray client). Reported: RSS after the imports, RSS after load + LoRA, the peak
(VmHWM) over load and training, the weights' own size (`get_memory_footprint`), and the peak
relative to no quantization. RSS after the imports is the same in every mode (torch alone is a
few hundred MiB); the peak minus it ("added") is what the model and training add. After training,
RSS splits into anonymous memory and file-backed pages (the mapped checkpoint: clean, so the
kernel may drop them under pressure, and shared by every process that maps the same file).

What it measured on a 2-core CPU (bitsandbytes 0.50, torch 2.13, bundled model): quantization
shrinks the weights (513 -> 159 MiB at 4-bit) but not the client's peak RSS, which came out
~1.2x higher than without quantization. The bundled checkpoint is fp32 safetensors (converted
from the GGUF); quantizing reads every page of it and they stay mapped (~0.5 GiB file-backed,
also after training; not traced further: perhaps the unquantized tied embedding still views the
file), quantizing adds temporaries, and training activations (logits over a 49k vocabulary) outweigh the weights
of a 135M model. Without quantization the weights are the mapped file itself, paged in as used.

Communication: what one sampled client receives and sends each round, as the wire carries it
(the adapter as fp32 Arrays packed into one, fedsafe/federation/transport.py, serialized as Flower's
RecordDict protobuf) against the full model's parameters in fp32 and in bf16 (the Hub
checkpoint's dtype for SmolLM2), and per round for clients.per-round clients (both directions).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
from common import (current_rss_mb, machine, peak_rss_mb, report, reset_peak_rss, rss_parts_mb,  # noqa: E402
                    table, tiny_model)

from fedsafe.config import BUNDLED_MODEL as BUNDLED  # noqa: E402
MB = 2**20


def settings_for(model: str, quantization: int, tiny: bool):
    from fedsafe.config import from_run_config

    values = {"model.name": model, "model.quantization": quantization, "attack.num-malicious": 0}
    if tiny:  # as the tests and bench/deployment.py configure the tiny model
        values.update({"model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj", "train.seq-length": 96})
    return from_run_config(values)


def child(model: str, quantization: int, steps: int, tiny: bool) -> dict:
    """One client's load + LoRA + training in this (fresh) process; its memory and its bytes."""
    import bitsandbytes  # noqa: F401  every library a client imports, before the baseline
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    from flwr.app import RecordDict
    from flwr.common.serde import recorddict_to_proto

    from fedsafe import client, models
    from fedsafe.training import sft
    from fedsafe.federation.transport import pack_record

    torch.set_num_threads(1)
    settings = settings_for(model, quantization, tiny)
    imports = current_rss_mb()
    peak_tracked = reset_peak_rss()
    started = time.perf_counter()
    base = models.load_base_model(settings.model)
    weights = base.get_memory_footprint() / MB
    lora = models.add_lora(base, settings.model, settings.seed)
    loaded, load_seconds = current_rss_mb(), time.perf_counter() - started
    tokenizer = models.cached_tokenizer(settings.model)
    examples = client.client_examples(settings, 0)
    result = sft(lora, examples, steps=steps, batch_size=settings.train.batch_size, lr=1e-3, seed=0,
                 pad_id=tokenizer.pad_token_id)
    anon, mapped = rss_parts_mb()  # after training
    state = models.adapter_state(lora)
    packed = pack_record(models.to_arrays(state))
    wire = recorddict_to_proto(RecordDict({"arrays": packed})).ByteSize()
    return {
        "quantization": quantization, "imports_mb": imports, "loaded_mb": loaded, "peak_mb": peak_rss_mb(),
        "peak_tracked": peak_tracked, "anon_mb": anon, "file_mb": mapped, "weights_mb": weights,
        "load_s": load_seconds, "step_s": result.seconds / steps, "loss": result.loss,
        "adapter_params": sum(v.numel() for v in state.values()), "adapter_tensors": len(state),
        "adapter_wire_bytes": wire, "per_round": settings.clients.per_round,
    }


def run_child(model: str, quantization: int, steps: int, tiny: bool) -> dict:
    command = [sys.executable, __file__, "--child", "--model", model, "--modes", str(quantization),
               "--steps", str(steps)] + (["--tiny"] if tiny else [])
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"quantization": quantization, "error": reason[-200:]}
    return json.loads(lines[-1])


def checkpoint_params(model: str) -> tuple[int, str]:
    """Parameter count and dtype of the model's safetensors checkpoint, read from the headers
    (no weights loaded; tied weights are stored once)."""
    from safetensors import safe_open

    from fedsafe.models import resolve_model_path

    count, dtypes = 0, set()
    for path in sorted(Path(resolve_model_path(model)).glob("*.safetensors")):
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():
                piece = f.get_slice(key)
                count += math.prod(piece.get_shape())
                dtypes.add(piece.get_dtype())
    return count, ",".join(sorted(dtypes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="bundled | tiny | a local model folder")
    parser.add_argument("--modes", default="4,8,0", help="model.quantization values, comma-separated")
    parser.add_argument("--steps", type=int, default=4, help="training steps per mode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = [int(m) for m in args.modes.split(",")]
    if args.child:
        print(json.dumps(child(args.model, modes[0], args.steps, args.tiny)), flush=True)
        return

    tiny = args.model == "tiny"
    before = machine()
    with tempfile.TemporaryDirectory(prefix="fedsafe-bench-memory-") as tmp:
        model = {"bundled": BUNDLED}.get(args.model, args.model)
        model = str(tiny_model(Path(tmp) / "tiny-model")) if tiny else model
        results = {m: run_child(model, m, args.steps, tiny) for m in modes}  # one at a time: no RSS contention
        full, dtype = checkpoint_params(model)
    ok = {m: r for m, r in results.items() if "error" not in r}
    for m, r in results.items():
        if "error" in r:
            print(f"model.quantization={m} failed: {r['error']}")
    if not ok:
        sys.exit(1)

    reference = ok.get(0, next(iter(ok.values())))  # ratios against no quantization when it ran
    print(f"{args.model} model: client RSS (MiB) over load + LoRA + {args.steps} training steps, one fresh "
          f"process per mode, 1 torch thread; ratios against "
          f"{'no quantization' if 0 in ok else 'the first mode'}; added = peak - imports; anon / file: RSS after "
          f"training, anonymous / file-backed (the mapped checkpoint, reclaimable)")
    label = {4: "4-bit NF4", 8: "8-bit", 0: "none (fp32)"}
    added = {m: r["peak_mb"] - r["imports_mb"] for m, r in ok.items()}  # what the model and training add
    rows = [[label.get(m, str(m)), r["imports_mb"], r["loaded_mb"], r["peak_mb"], added[m], r["anon_mb"],
             r["file_mb"], r["weights_mb"], r["load_s"], r["step_s"], r["peak_mb"] / reference["peak_mb"],
             added[m] / added[reference["quantization"]]] for m, r in ok.items()]
    table(["quantization", "imports", "after load", "peak", "added", "anon", "file", "weights", "load s", "s/step",
           "ratio peak", "ratio added"], rows)

    adapter, k = reference["adapter_wire_bytes"], reference["per_round"]
    print(f"\ncommunication: LoRA {reference['adapter_params']:,} parameters in {reference['adapter_tensors']} "
          f"tensors; full model {full:,} parameters (checkpoint dtype {dtype}); per round = {k} clients x "
          f"(download + upload)")
    rows = [["LoRA adapter (fp32, packed)", adapter / MB, 2 * k * adapter / MB, 1.0]]
    rows += [[f"full model, {kind}", full * size / MB, 2 * k * full * size / MB, full * size / adapter]
             for kind, size in (("fp32", 4), ("bf16", 2))]
    report("memory", ["exchange", "one way MiB", "per round MiB", "x adapter"], rows, {
        "model": args.model, "steps": args.steps, "machine": machine(), "load_before": before["load_1m"],
        "peak_mb": {m: round(r["peak_mb"], 1) for m, r in ok.items()},
        "peak_minus_imports_mb": {m: round(v, 1) for m, v in added.items()},
        "peak_ratio": {m: round(r["peak_mb"] / reference["peak_mb"], 3) for m, r in ok.items()},
        "added_ratio": {m: round(v / added[reference["quantization"]], 3) for m, v in added.items()},
        "failed": {m: r["error"] for m, r in results.items() if "error" in r},
        "adapter_params": reference["adapter_params"], "adapter_wire_bytes": adapter, "full_params": full,
        "clients_per_round": k, "full_fp32_over_adapter": round(full * 4 / adapter, 1),
        "full_bf16_over_adapter": round(full * 2 / adapter, 1),
    })


if __name__ == "__main__":
    main()
