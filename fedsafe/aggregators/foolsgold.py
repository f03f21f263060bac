"""FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil
Settings", RAID 2020).

Sybils pushing one objective send similar updates round after round. Per client id keep the sum
of its past updates; from the cosine similarities of these histories (self excluded as 0):
pardon honest clients that merely resemble a sybil (scale cs_ij by v_i / v_j when v_j > v_i,
v = max similarity), weight w_i = 1 - max_j cs_ij, rescale so the best client has 1, apply the
logit kappa * (ln(w / (1 - w)) + 0.5) and clip to [0, 1]. The round's update is the mean of the
current deltas weighted by w_i * num_examples_i (normalized: the contract's convex combination).
A client with w ~ 0 is flagged; `scores` are the FoolsGold weights. If every weight is 0 (all
histories parallel) the examples-weighted mean is returned and info["fallback"] says so.
History costs one d-vector per client id seen; state_dict/load_state_dict checkpoint it.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, cosine_from_gram, normalize
from fedsafe.aggregators.chunks import column_chunks
from fedsafe.aggregators.registry import register

ZERO = 1e-6  # weights at or below this are treated as excluded


@register("foolsgold")
class FoolsGold:
    needs_client_ids = True

    def __init__(self, kappa: float = 1.0):
        if not kappa > 0:
            raise ValueError(f"foolsgold kappa must be > 0, got {kappa!r}")
        self.kappa = float(kappa)
        self.history: dict[int, torch.Tensor] = {}  # client id -> (d,) sum of its updates

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor,
                 client_ids: list[int] | None = None) -> AggregationResult:
        n, d = updates.shape
        ids = list(range(n)) if client_ids is None else [int(c) for c in client_ids]
        if len(set(ids)) != n:
            raise ValueError(f"foolsgold needs distinct client ids, got {ids}")
        for row, cid in enumerate(ids):
            past = self.history.get(cid)
            if past is not None and past.shape != (d,):
                raise ValueError(f"foolsgold: client {cid} history has {past.numel()} values, update has {d}")
            self.history[cid] = updates[row].clone() if past is None else past.add_(updates[row])
        fg = foolsgold_weights(history_gram([self.history[c] for c in ids]), self.kappa)  # (n,)
        flagged = fg <= ZERO
        info = {}
        if flagged.all():
            p, info["fallback"] = normalize(weights), "all FoolsGold weights are 0; examples-weighted mean"
            flagged = torch.zeros(n, dtype=torch.bool)
        else:
            p = normalize(weights * fg.where(~flagged, torch.zeros_like(fg)))
        update = p.to(updates.dtype) @ updates  # (d,)
        return AggregationResult(update=update, weights=p, flagged=flagged, scores=fg, info=info)

    def state_dict(self) -> dict:
        return {"kappa": self.kappa, "history": {str(c): h.clone() for c, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(c): torch.as_tensor(h).clone() for c, h in state["history"].items()}


def history_gram(rows: list[torch.Tensor]) -> torch.Tensor:
    """Gram matrix (n, n) float64 of n separate (d,) tensors, stacked chunk by chunk."""
    n, d = len(rows), rows[0].numel()
    g = torch.zeros(n, n, dtype=torch.float64)
    for cols in column_chunks(n, d):
        c = torch.stack([r[cols] for r in rows])  # (n, C)
        g += (c @ c.T).to(torch.float64)
    return (g + g.T) / 2


def foolsgold_weights(g: torch.Tensor, kappa: float) -> torch.Tensor:
    """FoolsGold weights (n,) in [0, 1] from the Gram matrix of client histories."""
    n = g.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    cs = cosine_from_gram(g)
    cs.fill_diagonal_(0)  # self excluded; maxima are then >= 0, so pardoning ratios are defined
    v = cs.max(dim=1).values  # (n,)
    pardon = (v[None, :] > v[:, None])  # [i, j]: j is more similar to someone than i is
    cs = torch.where(pardon, cs * v[:, None] / v[None, :].clamp_min(1e-30), cs)
    w = (1 - cs.max(dim=1).values).clamp(0, 1)
    if w.max() <= 0:
        return torch.zeros(n, dtype=torch.float64)
    w = (w / w.max()).clamp(max=0.99)  # 0.99: the logit of 1 is infinite
    logit = kappa * (torch.log(w / (1 - w)) + 0.5)  # -inf for w = 0
    return logit.nan_to_num(neginf=0.0).clamp(0, 1)
