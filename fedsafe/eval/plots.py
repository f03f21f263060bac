"""PNG plots of one run's results.json: the safety curve and the per-client aggregation grid.

Figures are built on `matplotlib.figure.Figure` (Agg canvas), never through pyplot, so plotting
changes no global backend or state in the caller's process and works without a display. Output
is deterministic: fixed sizes, DPI 100, and no version stamp in the PNG metadata.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 100
STAGES = {"initial": "initial", "after_fl": "after FL", "after_posthoc": "after post-hoc"}
SERIES = [  # eval metric, colour, marker, legend label
    ("safety_rate", "tab:green", "s", "safety rate (eval)"),
    ("benign_refusal_rate", "tab:red", "^", "benign refusal (eval)"),
]


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _value(stage: dict | None, key: str) -> float | None:
    value = (stage or {}).get(key)
    ok = isinstance(value, int | float) and math.isfinite(value)
    return float(value) if ok else None


def _round_ticks(last: int) -> list[int]:
    if last <= 20:
        return list(range(last + 1))
    return [int(t) for t in MaxNLocator(integer=True).tick_values(0, last) if 0 <= t <= last]


def plot_safety(results: dict, path: Path) -> Path:
    """Safety probe per round (line) and eval stages (markers) on a shared [0, 1] axis:
    initial at round 0, after FL at the last round, after post-hoc just after it."""
    rounds = results.get("rounds") or []
    evals = results.get("eval") or {}
    last = max((r["round"] for r in rounds), default=1)
    posthoc_x = last + max(0.5, 0.1 * last)  # far enough that its tick label stays apart
    stage_x = {"initial": 0.0, "after_fl": float(last), "after_posthoc": posthoc_x}
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()

    probe = [(r["round"], _value(r, "safety_probe")) for r in rounds]
    probe = [(x, y) for x, y in probe if y is not None]
    if probe:
        ax.plot(*zip(*probe), "-o", color="tab:blue", ms=4, label="safety probe (per round)")
    for key, colour, marker, label in SERIES:
        points = [(stage_x[s], _value(evals.get(s), key)) for s in STAGES]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points), ls="none", marker=marker, ms=9, color=colour, label=label)
        for x, y in points:
            ax.annotate(f"{y:.0%}", (x, y), textcoords="offset points", xytext=(7, 4),
                        fontsize=8, color=colour)
    if not ax.lines:
        ax.text(0.5, 0.5, "no safety measurements in results.json", ha="center", va="center",
                transform=ax.transAxes, color="grey")

    ax.set_ylim(-0.04, 1.04)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlim(-0.4, posthoc_x + max(0.6, 0.08 * last))  # room for the value labels
    ticks = _round_ticks(last)
    labels = ["init" if t == 0 else str(t) for t in ticks]
    if "after_posthoc" in evals:
        ticks, labels = ticks + [posthoc_x], labels + ["post-hoc"]
    ax.set_xticks(ticks, labels)
    ax.set_xlabel("FL round")
    ax.set_ylabel("share of prompts")
    title = "Safety over training (higher safety rate and lower benign refusal are better)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def malicious_ids(config: dict, rounds: list[dict]) -> list[int]:
    """Malicious partition ids: configured (`attack.malicious-ids`) or seen in round records."""
    configured = config.get("attack.malicious-ids") or []
    if isinstance(configured, str):
        configured = [s for s in configured.split(",") if s.strip()]
    seen = {c["partition_id"] for r in rounds for c in r.get("clients") or [] if c.get("malicious")}
    return sorted(seen | {int(i) for i in configured})


def _client_grid(results: dict):
    """Partition ids (rows), weights (partitions, rounds) with NaN = not sampled, and the
    (column, row) cells that were flagged, dropped, or held a malicious client."""
    rounds = results.get("rounds") or []
    malicious = set(malicious_ids(results.get("config") or {}, rounds))
    records = [(j, c, False) for j, r in enumerate(rounds) for c in r.get("clients") or []]
    lost = [
        (j, d)
        for j, r in enumerate(rounds)
        for d in (r.get("dropped") or []) + (r.get("failed") or [])
    ]
    records += [(j, d, True) for j, d in lost]
    records = [rec for rec in records if rec[1].get("partition_id") is not None]
    num = (results.get("config") or {}).get("clients.num")
    partitions = sorted({c["partition_id"] for _, c, _ in records} | set(range(int(num or 0))))
    row = {p: i for i, p in enumerate(partitions)}

    weights = np.full((len(partitions), len(rounds)), np.nan)  # (partitions, rounds)
    cells = {"flagged": [], "dropped": [], "malicious": []}
    for j, c, was_dropped in records:
        i = row[c["partition_id"]]
        if was_dropped:
            cells["dropped"].append((j, i))
        elif c.get("weight") is not None:
            weights[i, j] = c["weight"]
        if c.get("flagged") and not was_dropped:
            cells["flagged"].append((j, i))
        if c["partition_id"] in malicious:
            cells["malicious"].append((j, i))
    return partitions, malicious, weights, cells


def _sparse_ticks(n: int, most: int) -> list[int]:
    return list(range(0, n, max(1, math.ceil(n / most))))


def plot_clients(results: dict, path: Path) -> Path:
    """Grid of rounds x partitions: colour = aggregation weight, x = flagged, red = malicious."""
    rounds = results.get("rounds") or []
    partitions, malicious, weights, cells = _client_grid(results)
    n_rows, n_cols = weights.shape
    size = (min(3.5 + 0.45 * n_cols, 16), min(2.0 + 0.32 * n_rows, 14))  # inches, capped
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    if weights.size == 0:
        ax.text(0.5, 0.5, "no client records in results.json", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        return _save(fig, path)

    vmax = float(np.nanmax(weights)) if np.isfinite(weights).any() else 1.0
    cmap = colormaps["viridis"].with_extremes(bad="#e6e6e6")  # grey: not sampled that round
    image = ax.imshow(np.ma.masked_invalid(weights), cmap=cmap, vmin=0.0, vmax=max(vmax, 1e-9),
                      aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="aggregation weight", shrink=0.9)
    if weights.size <= 600:  # small grids: print each weight (flagged cells show their x)
        for (i, j), w in np.ndenumerate(weights):
            if math.isfinite(w) and (j, i) not in cells["flagged"]:
                colour = "black" if w > 0.6 * vmax else "white"
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1 if n_rows * n_cols <= 2000 else 0)
    ax.tick_params(which="minor", length=0)
    for j, i in cells["malicious"]:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="tab:red", lw=2.5,
                               zorder=2.5))
    if cells["flagged"]:
        ax.scatter(*zip(*cells["flagged"]), marker="x", s=90, c="black", linewidths=2.5, zorder=3)
    if cells["dropped"]:
        ax.scatter(*zip(*cells["dropped"]), marker="D", s=50, facecolors="white",
                   edgecolors="black", zorder=3)

    xs = _sparse_ticks(n_cols, 25)
    ax.set_xticks(xs, [str(rounds[j]["round"]) for j in xs])
    ys = _sparse_ticks(n_rows, 40)
    ax.set_yticks(ys, [f"{partitions[i]} (mal.)" if partitions[i] in malicious
                       else str(partitions[i]) for i in ys])
    for label, i in zip(ax.get_yticklabels(), ys, strict=True):
        if partitions[i] in malicious:
            label.set_color("tab:red")
            label.set_fontweight("bold")
    ax.set_xlabel("FL round")
    ax.set_ylabel("client (partition id)")
    ax.set_title("Sampled clients and their aggregation weight (grey = not sampled)", fontsize=10)
    legend = [
        Line2D([], [], marker="x", color="black", ls="none", ms=8, mew=2.5, label="flagged"),
        Line2D([], [], marker="D", mfc="white", mec="black", ls="none", label="dropped or failed"),
        Rectangle((0, 0), 1, 1, fill=False, ec="tab:red", lw=2.5, label="malicious"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _save(fig, path)
