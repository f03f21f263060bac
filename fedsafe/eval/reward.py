"""RM: the mean score of a reward model on (prompt, answer) pairs, the paper's third metric.

The paper (Ye et al. 2024, arXiv 2406.10630; evaluation/openassistant_reward.py in its code)
scores its AdvBench answers, answers to harmful prompts, with
OpenAssistant/reward-model-deberta-v3-large-v2: the reward logit of (instruction, answer) as a
text pair, averaged. fedsafe scores the same pairs its safety judges read, the eval.safety.benchmark
prompts of each stage (AdvBench with eval.safety.benchmark = "advbench"). Higher = an answer the
reward model prefers; on harmful prompts those are mostly refusals.

Any one-output sequence classifier loads (a Hub id or a folder), in eval mode, fp32 as in the
paper, on the GPU when there is one; pairs are scored in batches of similar length with right
padding, so a DeBERTa reads its first token and a decoder classifier its last real one.
"""

from __future__ import annotations

import torch

from fedsafe.eval.judges import check_pairs, padded_tokenizer

# Tokens per (prompt, answer) pair: above the paper's prompts plus 1,024-token answers, so its
# pairs pass whole (it truncated nothing); a bound on memory for longer ones.
MAX_LENGTH = 2048


class RewardModel:
    def __init__(self, name_or_path, *, device=None, batch_size: int = 8, max_length: int = MAX_LENGTH,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForSequenceClassification

        name = str(name_or_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = AutoModelForSequenceClassification.from_pretrained(name, dtype=torch.float32,
                                                                   trust_remote_code=trust_remote_code)
        if model.config.num_labels != 1:
            raise ValueError(f"eval.rm-model={name!r}: a reward model has one output, this classifier "
                             f"{model.config.num_labels}")
        self.model = model.to(self.device).eval()
        tok = padded_tokenizer(name, trust_remote_code, "reward")
        if self.model.config.pad_token_id is None:  # decoder classifiers find the last token by it
            self.model.config.pad_token_id = tok.pad_token_id
        tok.padding_side = "right"
        self.tokenizer = tok
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The reward of each (prompt, response) pair, in the caller's order."""
        check_pairs(prompts, responses)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        rewards = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], [responses[i] for i in idx], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits.float()  # (b, 1)
            for i, value in zip(idx, logits[:, 0].tolist(), strict=True):
                rewards[i] = value
        return rewards
