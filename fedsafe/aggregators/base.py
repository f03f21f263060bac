"""The Aggregator contract and the helpers every rule shares.

An aggregator is any callable `agg(updates, weights) -> AggregationResult`:
`updates` is a float tensor (n, d), one flattened LoRA delta per client, `weights` (n,) the
clients' example counts. Hyperparameters live in the constructor, state on `self`; no Flower
types ever reach an aggregator. Optional needs are declared as class attributes and honoured by
`call_aggregator`: `needs_client_ids` (stable partition ids, e.g. FoolsGold's per-client history),
`needs_probe` (a behaviour-probe defense), `needs_malicious` (the run's ground truth, one bool per
row: for reference rules such as `oracle`, never for a defense) and `takes_reserves`: the rows
come in priority order (the round's sampled clients, then its reserve clients in draw order) and
the rule aggregates at most `keep_at_most` of them, the first it keeps, so reserves stand in for
excluded clients; the unused ones get weight 0, unflagged. `min_clients` says how many replies a
rule needs; the strategy keeps the previous global adapter below it. `degenerate(n)` says whether
a setting makes the rule do no more than a plain average with n updates a round (a `Degenerate`,
or None); the config refuses such a setting before anything loads.

Conventions shared by the built-in rules:
- averages are examples-weighted (as FedAvg); coordinate-wise order statistics (median,
  trimmed mean, Bulyan's second phase, residual reweighting) ignore example counts, as in their
  papers and in Flower's FedMedian / FedTrimmedAvg / Bulyan;
- the reported `weights` are the convex coefficients applied to each client's (possibly clipped)
  vector; coordinate-wise rules report the share of coordinates each client's value was used in;
- coordinate-wise rules exclude no client, so they flag nobody (their `scores` carry the signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from fedsafe.aggregators.chunks import column_chunks
from fedsafe.registry import plugin_name


@dataclass
class AggregationResult:
    update: torch.Tensor  # (d,) aggregated delta, same dtype as the updates
    weights: torch.Tensor  # (n,) float64, >= 0, sums to 1; 0 for excluded clients
    flagged: torch.Tensor  # (n,) bool, True = treated as malicious / excluded / clipped
    scores: torch.Tensor | None = None  # (n,) float64 per-client score, meaning per rule
    info: dict[str, Any] = field(default_factory=dict)  # small JSON-serializable extras


@dataclass(frozen=True)
class Degenerate:
    """Why a rule would do no more than a plain average with a round of n updates: `param` is the
    constructor parameter at fault (None: no value works, the round is too small), `value` its
    value, `why` what happens and the nearest value that works (other keys named kebab-case)."""
    param: str | None
    value: Any
    why: str


class Aggregator(Protocol):
    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult: ...


def validate_updates(updates: torch.Tensor, weights: torch.Tensor) -> None:
    """Raise ValueError unless updates is finite float (n, d) and weights finite positive (n,)."""
    if not isinstance(updates, torch.Tensor) or updates.dim() != 2:
        raise ValueError(f"updates must be a 2-D tensor (n, d), got {_shape(updates)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got {updates.dtype}")
    n = updates.shape[0]
    if n == 0 or updates.shape[1] == 0:
        raise ValueError(f"updates must be non-empty, got shape {tuple(updates.shape)}")
    if not isinstance(weights, torch.Tensor) or weights.shape != (n,):
        raise ValueError(f"weights must be a tensor of shape ({n},), got {_shape(weights)}")
    if not torch.isfinite(weights).all() or not (weights > 0).all():
        raise ValueError(f"weights must be finite and > 0, got {weights.tolist()}")
    bad = [i for i in range(n) if not _finite(updates[i])]  # no (n, d) mask
    if bad:
        raise ValueError(f"updates contain non-finite values in rows {bad}")


def call_aggregator(agg, updates: torch.Tensor, weights: torch.Tensor, *,
                    client_ids: Sequence[int] | None = None, probe: Any = None,
                    malicious: Sequence[bool] | None = None, keep_at_most: int | None = None) -> AggregationResult:
    """Call `agg` with only what it declares it needs, then check the result's shapes."""
    n, d = updates.shape
    extra: dict[str, Any] = {}
    if getattr(agg, "needs_client_ids", False):
        if client_ids is None or len(client_ids) != n:
            raise ValueError(f"{plugin_name(agg)} needs client_ids, one per update row ({n})")
        extra["client_ids"] = [int(c) for c in client_ids]
    if getattr(agg, "needs_probe", False):
        if probe is None:
            raise ValueError(f"{plugin_name(agg)} needs a behaviour probe, none was given")
        extra["probe"] = probe
    if getattr(agg, "needs_malicious", False):
        if malicious is None or len(malicious) != n:
            raise ValueError(f"{plugin_name(agg)} needs malicious, one bool per update row ({n})")
        extra["malicious"] = [bool(m) for m in malicious]
    if getattr(agg, "takes_reserves", False):
        extra["keep_at_most"] = n if keep_at_most is None else keep_at_most
    result = agg(updates, weights, **extra)
    check_result(result, n, d, plugin_name(agg))
    return result


def first_kept(flagged: torch.Tensor, keep_at_most: int | None = None) -> torch.Tensor:
    """(k,) indices of the first `keep_at_most` rows not flagged (all when None): reserves come
    last, so they stand in for excluded rows only as far as the round needs them."""
    return (~flagged).nonzero().flatten()[:keep_at_most]


def keep_mask(flagged: torch.Tensor, keep_at_most: int | None = None) -> torch.Tensor:
    """(n,) bool: the rows `first_kept` keeps; the same as ~flagged when nothing is left over."""
    mask = torch.zeros(len(flagged), dtype=torch.bool)
    mask[first_kept(flagged, keep_at_most)] = True
    return mask


def aggregate_kept(fallback, updates: torch.Tensor, weights: torch.Tensor, flagged: torch.Tensor,
                   kept: torch.Tensor) -> AggregationResult:
    """For rules that exclude: `fallback` aggregates the `kept` rows, its weights land on them (0
    elsewhere) and its own flags are added to `flagged`. Nothing kept: a zero update and all
    weights 0, so the global adapter stays as it is."""
    full = torch.zeros(len(weights), dtype=torch.float64)
    if kept.numel() == 0:
        return AggregationResult(update=torch.zeros(updates.shape[1], dtype=updates.dtype), weights=full,
                                 flagged=flagged)
    inner = call_aggregator(fallback, updates[kept], weights[kept])
    full[kept] = inner.weights.double()
    flagged = flagged.clone()
    flagged[kept] |= inner.flagged
    return AggregationResult(update=inner.update, weights=full, flagged=flagged)


def check_result(result: AggregationResult, n: int, d: int, name: str = "aggregator") -> None:
    """Guard against aggregators (user ones above all) that break the contract."""
    if not isinstance(result, AggregationResult):
        raise TypeError(f"{name} returned {type(result).__name__}, expected AggregationResult")
    if result.update.shape != (d,) or not _finite(result.update):
        raise ValueError(f"{name}: update must be finite with shape ({d},), got {_shape(result.update)}")
    w = result.weights
    nothing_kept = w.shape == (n,) and not w.any() and not result.update.any()  # every client excluded
    if w.shape != (n,) or not torch.isfinite(w).all() or (w < -1e-9).any() or (
            abs(float(w.sum()) - 1) > 1e-4 and not nothing_kept):
        raise ValueError(f"{name}: weights must be (n,) >= 0 summing to 1 (or all 0 with a zero update),"
                         f" got {w.tolist()}")
    if result.flagged.shape != (n,) or result.flagged.dtype != torch.bool:
        raise ValueError(f"{name}: flagged must be a bool tensor of shape ({n},)")
    if result.scores is not None and result.scores.shape != (n,):
        raise ValueError(f"{name}: scores must have shape ({n},), got {_shape(result.scores)}")


# ---- shared math -----------------------------------------------------------------------------

def normalize(w: torch.Tensor) -> torch.Tensor:
    """(n,) non-negative -> float64 summing to 1."""
    w = w.to(torch.float64)
    return w / w.sum()


def weighted_mean(updates: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """sum_i p_i * updates[i] as one BLAS pass; p (n,) sums to 1. Returns (d,)."""
    return p.to(updates.dtype) @ updates


def gram(updates: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """Inner products (n, n) in float64, accumulated over column chunks.

    center=True subtracts the first row chunk by chunk (one global translation: distances do not
    change), which keeps float32 cancellation out of distances between nearly equal updates.
    """
    n, d = updates.shape
    g = torch.zeros(n, n, dtype=torch.float64)
    for cols in column_chunks(n, d):
        c = updates[:, cols]  # (n, C) strided view, no copy
        if center:
            c = c - c[:1]
        g += (c @ c.T).to(torch.float64)
    return (g + g.T) / 2  # BLAS need not return an exactly symmetric product


def pairwise_sq_dists(updates: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances (n, n) float64 via one centered Gram matrix: |x|^2 + |y|^2 - 2 x.y."""
    g = gram(updates, center=True)
    sq = g.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * g).clamp_min_(0)
    dist.fill_diagonal_(0)
    return dist


def cosine_from_gram(g: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (n, n) from an uncentered Gram matrix; a zero vector has cosine 0."""
    norms = g.diagonal().clamp_min(0).sqrt()
    return (g / (norms[:, None] * norms[None, :]).clamp_min(1e-30)).clamp(-1, 1)


def median(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Median along `dim` with numpy semantics (mean of the two middle values for even sizes).
    For small tensors (per-client vectors); the (n, d) rules sort chunks with sort_columns."""
    m = t.shape[dim]
    s = t.sort(dim=dim).values
    return (s.select(dim, (m - 1) // 2) + s.select(dim, m // 2)) / 2


def no_flags(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool)


def check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _finite(t: torch.Tensor) -> bool:
    lo, hi = torch.aminmax(t)  # NaN propagates; no (d,) mask allocated
    return bool(torch.isfinite(lo) and torch.isfinite(hi))


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
