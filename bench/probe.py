"""Cost of the `safety-probe` defense's behaviour probe on the bundled model, and what the shared
prompt prefix saves.

    python bench/probe.py                  # probe size 8 (the default), 4 updates, 1 repeat
    python bench/probe.py --size 16 --updates 4 --threads 2

One probe call scores the global adapter and each of `--updates` client updates (random deltas
of a client's typical norm; the cost does not depend on what they contain) on harmful prompts
with refusals, the same prompts with the base model's own compliant answers, and benign prompts
with helpful answers, each target cut to its opening as the server does. "cached prefix" is fedsafe's `pair_logliks` (the chat template's shared
system turn runs once per adapter, sorted batches); "plain" scores the same batches with every
prompt token run, as before. The share of a round's wall time is measured in a real run:
`python bench/default_run.py --from RUN_DIR` of a `defense.aggregator='safety-probe'` run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import machine, report  # noqa: E402

from fedsafe import config, data, models  # noqa: E402
from fedsafe.eval.helpfulness import pair_logliks  # noqa: E402
from fedsafe.federation.probe import BehaviourProbe, compliant_pairs, probe_pairs  # noqa: E402
from fedsafe.training import response_nll  # noqa: E402


@torch.no_grad()
def plain_pair_logliks(model, tokenizer, pairs, seq_length, batch_size=16, close_turn=True):
    """Every token of every pair through the model, pairs in the given order."""
    examples = data.tokenize_pairs(tokenizer, pairs, seq_length, close_turn)
    model.eval()
    sums, counts = [], []
    for start in range(0, len(examples), batch_size):
        nll, count = response_nll(model, data.collate(examples[start:start + batch_size], tokenizer.pad_token_id))
        sums.append(-nll.float())
        counts.append(count)
    return torch.cat(sums), torch.cat(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8, help="harmful probe prompts (benign: half)")
    parser.add_argument("--updates", type=int, default=4, help="client updates scored per call")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = machine()
    settings = config.from_run_config(config.defaults(), check_aggregator=False)
    model = models.cached_lora_model(settings.model, settings.seed)
    tokenizer = models.cached_tokenizer(settings.model)
    initial = models.initial_adapter(settings.model, settings.seed)
    models.set_adapter_state(model, initial)
    harmful, helpful = probe_pairs(args.size, [p["instruction"] for p in data.bundled("harmful_eval")])
    compliant = compliant_pairs(model, tokenizer, harmful)
    probe = BehaviourProbe(model, tokenizer, harmful, compliant, helpful, settings.train.seq_length)
    torch.manual_seed(0)
    flat = models.flatten(initial)
    updates = torch.randn(args.updates, flat.numel()) * (4.0 / flat.numel() ** 0.5)  # norm ~4, a round-1 client's
    tokens = sum(len(e["input_ids"]) for e in probe.examples)

    def score_all(scorer) -> torch.Tensor:
        """Summed log-likelihoods of every set, for the global adapter and each update."""
        out = []
        for delta in [torch.zeros_like(flat), *updates]:
            models.set_adapter_state(model, models.unflatten(flat + delta, initial))
            out.append(torch.cat([scorer(model, tokenizer, pairs, settings.train.seq_length, close_turn=False)[0]
                                  for pairs in probe.sets]))
        return torch.stack(out)

    seconds, sums = {}, {}
    for name, scorer in (("plain", plain_pair_logliks), ("cached prefix", pair_logliks)):
        started = time.perf_counter()
        for _ in range(args.repeats):
            sums[name] = score_all(scorer)
        seconds[name] = (time.perf_counter() - started) / args.repeats
    started = time.perf_counter()
    probe(initial, updates)
    seconds["BehaviourProbe call"] = time.perf_counter() - started
    gap = float((sums["plain"] - sums["cached prefix"]).abs().max())
    rows = [[name, t, f"{(args.updates + 1) * tokens / t:.0f}"] for name, t in seconds.items()]
    report("probe", ["scorer", "seconds per call", "prompt+answer tokens/s"], rows, {
        "machine": before, "size": args.size, "updates": args.updates, "threads": args.threads,
        "compliant": len(compliant), "tokens_per_adapter": tokens, "seconds": seconds,
        "speedup": seconds["plain"] / seconds["cached prefix"], "max_loglik_gap": gap})

if __name__ == "__main__":
    main()
