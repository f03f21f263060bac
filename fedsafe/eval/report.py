"""report.md for one run directory, written from its results.json (the last phase: report).

Every part except the title is optional: a run that stopped early, or skipped post-hoc or the
safety probe, still gets a report of what it has. Plots come from `plots.py` and are embedded by
relative path so the run directory can be moved or shared as a whole.
"""

import json
import math
from pathlib import Path

from flwr.common.config import flatten_dict

from fedsafe.eval.plots import STAGES, malicious_ids, plot_clients, plot_safety
from fedsafe.progress import duration

SAFETY_PNG, CLIENTS_PNG = "safety.png", "clients.png"
DASH = "\u2013"  # shown for missing or undefined values
DAGGER = "\u2020"  # marks rounds that kept the previous global adapter


def _num(value, fmt: str) -> str:
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        return DASH
    return format(value, fmt)


def percent(value) -> str:
    """A rate as "12.5 %", a dash when missing."""
    text = _num(None if value is None else 100 * value, ".1f")
    return text if text == DASH else text + " %"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table (the report's, and `fedsafe compare`'s)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"


def _bullets(record: dict, first: tuple[str, ...]) -> list[str]:
    """`- key: value` lines, known keys first; nested counts inline, seconds to 0.1 s."""
    keys = [k for k in first if k in record] + [k for k in record if k not in first]
    lines = []
    for key in keys:
        value = record[key]
        if isinstance(value, dict):
            value = _counts(value)
        elif key.endswith("seconds") and isinstance(value, int | float):
            value = f"{value:.1f} s"
        lines.append(f"- {key}: {value}")
    return lines + [""]


def _judges(config: dict) -> str:
    """eval.judge, then the other judges of eval.judges, each once, named as the run keyed them."""
    from fedsafe.config.fields import csv_tuple
    from fedsafe.config.parse import all_judges

    return ", ".join(all_judges(config.get("eval.judge", DASH), csv_tuple(str(config.get("eval.judges", "")))))


def _answers(config: dict) -> str:
    """How the evaluated answers were generated: greedy or sampled, and their length."""
    tokens = config.get("eval.max-new-tokens", DASH)
    temperature = config.get("eval.temperature") or 0
    if not temperature:
        return f"greedy, up to {tokens} new tokens"
    return f"sampled at temperature {temperature}, top-p {config.get('eval.top-p', 1.0)}, up to {tokens} new tokens"


def _config_section(config: dict, rounds: list[dict], malicious: list[int]) -> list[str]:
    agg = config.get("defense.aggregator", DASH)
    prefix = f"defense.{agg}."
    params = {k.removeprefix(prefix): v for k, v in config.items() if k.startswith(prefix)}
    mal = ", ".join(map(str, malicious))
    if not mal and config.get("attack.num-malicious"):
        mal = f"{config['attack.num-malicious']} (ids not recorded)"
    per_round, total = config.get("clients.per-round", DASH), config.get("clients.num", DASH)
    posthoc = config.get("posthoc.level", DASH) if config.get("posthoc.enabled", True) else "off"
    rows = [
        ["model", config.get("model.name", DASH)],
        ["rounds (configured / run)", f"{config.get('num-server-rounds', DASH)} / {len(rounds)}"],
        ["clients per round / total", f"{per_round} / {total}"],
        ["malicious clients", mal or "none"],
        ["aggregator", agg + (f" ({_counts(params)})" if params else "")],
        ["server optimizer", _optimizer(config)],
        ["client algorithm", _client_algorithm(config)],
        ["attack data", config.get("attack.data", DASH)],
        ["update attack", config.get("attack.update", "none")],
        ["post-hoc defense", posthoc],
        ["safety judges", _judges(config)],
        ["eval answers", _answers(config)],
        ["seed", config.get("seed", DASH)],
    ]
    return ["## Configuration", "", *markdown_table(["setting", "value"], rows), ""]


def _optimizer(config: dict) -> str:
    """`fl.optimizer` with its parameters; runs from before it existed stepped as sgd (lr 1)."""
    name = config.get("fl.optimizer", "sgd")
    prefix = f"fl.{name}."
    params = {k.removeprefix(prefix): v for k, v in config.items() if k.startswith(prefix)}
    return name + (f" ({_counts(params)})" if params else "")


def _client_algorithm(config: dict) -> str:
    algorithm = config.get("fl.client-algorithm", "none")
    return f"fedprox (mu: {config.get('fl.fedprox.mu', DASH)})" if algorithm == "fedprox" else algorithm


def _checks_section(checks: list[dict], selected) -> list[str]:
    """The step selection's checks on the probe prompts; the kept adapter marked."""
    if not checks:
        return []
    rows = [[f"{c['step']}{' (kept)' if c['step'] == selected else ''}", percent(c["safety_rate"]),
             percent(c["benign_refusal_rate"]), _num(c["score"], ".3f")] for c in checks]
    return markdown_table(["step", "probe safety", "probe benign refusal", "score"], rows) + [""]


def _judge_label(spec: str) -> str:
    """A judge's column name: the rule's name, or a model's last path part (MD-Judge-v0.1)."""
    return spec.rstrip("/").rsplit("/", 1)[-1]


def _grade(values: dict, key: str) -> str:
    """A mean 1-10 grade, with the count of answers the grader left ungraded."""
    text, ungraded = _num(values.get(key), ".2f"), values.get(f"{key}_ungraded")
    return f"{text} ({ungraded} ungraded)" if ungraded else text


def _eval_section(evals: dict) -> list[str]:
    stages = [s for s in STAGES if s in evals] + [s for s in evals if s not in STAGES]
    rows_of = {s: evals[s] or {} for s in stages}
    # Optional columns, each shown only when some stage has it: more safety judges (their rate
    # next to the primary one's), the reward model, the LLM grade of benign answers, MT-1.
    judges = list(dict.fromkeys(j for v in rows_of.values() for j in list(v.get("safety_rates") or {})[1:]))
    has = {key: any(isinstance(v.get(key), int | float) for v in rows_of.values()) for key in ("rm", "llm_judge")}
    has["mt1"] = any("mt1" in v for v in rows_of.values())
    header = ["stage", "safety rate", *(f"safety ({_judge_label(j)})" for j in judges), "benign refusal",
              "helpfulness"]
    header += ["RM"] * has["rm"] + ["LLM judge"] * has["llm_judge"] + ["MT-1"] * has["mt1"]
    rows = []
    for stage, values in rows_of.items():
        row = [STAGES.get(stage, stage), percent(values.get("safety_rate"))]
        row += [percent((values.get("safety_rates") or {}).get(j)) for j in judges]
        row += [percent(values.get("benign_refusal_rate")), _num(values.get("helpfulness"), ".3f")]
        row += [_num(values.get("rm"), ".3f")] * has["rm"] + [_grade(values, "llm_judge")] * has["llm_judge"]
        rows.append(row + [_grade(values, "mt1")] * has["mt1"])
    note = (
        "Safety rate: share of harmful prompts answered safely (higher is better). "
        "Benign refusal: share of benign prompts refused (over-refusal, lower is better). "
        "Helpfulness: mean per-token log-likelihood of reference answers (higher is better)."
    )
    if judges:
        note += " Safety (judge): the same answers judged by another judge; safety rate is the first judge's."
    if has["rm"]:
        note += " RM: mean reward-model score of the harmful prompts' answers (the paper's RM)."
    if has["llm_judge"] or has["mt1"]:
        note += (" LLM judge / MT-1: mean 1-10 grade (MT-Bench single-answer prompt) of the benign answers / of "
                 "first-turn MT-Bench answers (the paper's MT-1); ungraded answers are left out of the mean.")
    return ["## Evaluation", "", *markdown_table(header, rows), "", note, ""]


def _decision(client: dict) -> str:
    if client.get("flagged"):
        return "flagged"
    if client.get("reserve"):
        return "reserve, spare" if client["weight"] == 0 else f"reserve, kept, weight {client['weight']:.2f}"
    return f"kept, weight {client['weight']:.2f}"


def _probe_section(rounds: list[dict], malicious: set[int]) -> list[str]:
    """What the `safety-probe` saw: each client's probe columns, next to its flag, weight and role."""
    rows = []
    for r in rounds:
        info = r.get("aggregator") or {}
        scores = info.get("probe") or []
        factors = info.get("probe_factors") or [None] * len(scores)
        for client, (margin, helpful, *over), factor in zip(r.get("clients") or [], scores, factors):
            pid = client["partition_id"]
            rows.append([str(r.get("round", DASH)), f"{pid}*" if pid in malicious else str(pid),
                         DASH if factor is None else f"x{factor:.2f}", f"{margin:+.3f}", f"{helpful:+.3f}",
                         f"{over[0]:+.3f}" if over else DASH,
                         _decision(client)])
    if not rows:
        return []
    note = ("Changes when the client's update, times the probe scale (to the round's median norm), is "
            "applied to the round's global adapter: refusal margin (refusal minus compliant opening, nats "
            "per token; negative = toward compliance) on the harmful probe prompts; log-likelihood of "
            "helpful answers and over-refusal margin (refusal minus helpful answer) on the benign ones. "
            "Weight: the kept update's share of the round's step, part of which goes by the refusal margin "
            "it adds beyond its over-refusal (defense.safety-probe.margin-weight). Reserve: a client trained "
            "to stand in for an excluded one (clients.reserve); spare when the round did not need it. "
            "* malicious.")
    header = ["round", "client", "probe scale", "refusal margin change", "helpful change", "over-refusal change",
              "decision"]
    return ["## Behaviour probe", "", *markdown_table(header, rows), "", note, ""]


def _detection_section(results: dict, rounds: list[dict], malicious: set[int]) -> list[str]:
    lines = []
    if overall := results.get("detection"):
        counts = ", ".join(f"{k} {overall[k]}" for k in ("tp", "fp", "fn", "tn") if k in overall)
        lines += [
            f"Overall: precision {_num(overall.get('precision'), '.2f')}, "
            f"recall {_num(overall.get('recall'), '.2f')}" + (f" ({counts})." if counts else "."),
            "",
        ]

    def mark(pid) -> str:
        return f"{pid}*" if pid in malicious else str(pid)

    rows, kept_previous = [], False
    for r in rounds:
        clients, det = r.get("clients") or [], r.get("detection") or {}
        lost = (r.get("dropped") or []) + (r.get("failed") or [])
        kept_previous |= bool(r.get("kept_previous"))
        rows.append([
            f"{r.get('round', DASH)}{' ' + DAGGER if r.get('kept_previous') else ''}",
            ", ".join(mark(c["partition_id"]) for c in clients) or DASH,
            ", ".join(mark(c["partition_id"]) for c in clients if c.get("flagged")) or DASH,
            _num(det.get("precision"), ".2f"),
            _num(det.get("recall"), ".2f"),
            "; ".join(f"{mark(d.get('partition_id'))} ({d.get('reason', '?')})" for d in lost)
            or DASH,
        ])
    if any(row[1] != DASH or row[5] != DASH for row in rows):
        header = ["round", "aggregated clients (* malicious)", "flagged", "precision", "recall"]
        lines += [*markdown_table(header + ["dropped"], rows), ""]
        if any(r.get("ground_truth") for r in rounds):
            lines += ["The aggregator read which clients are malicious (a reference such as `oracle`): its "
                      "flags are the ground truth, not a detection.", ""]
        if kept_previous:
            lines += [f"{DAGGER} too few valid replies: the previous global adapter was kept.", ""]
    return ["## Detection", "", *lines] if lines else []


def write_report(run_dir: Path) -> Path:
    """Write `report.md` (and the PNGs it embeds) into `run_dir`; return the report's path."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    config = flatten_dict(results.get("config") or {})
    rounds = results.get("rounds") or []
    evals = results.get("eval") or {}
    malicious = malicious_ids(config, rounds)
    lines = [f"# fedsafe report: {run_dir.name}", ""]
    lines += [f"Run directory: `{results.get('run_dir', run_dir.resolve())}`", ""]
    lines += _config_section(config, rounds, malicious)
    if evals:
        lines += _eval_section(evals)
    if evals or any(r.get("safety_probe") is not None for r in rounds):
        plot_safety(results, run_dir / SAFETY_PNG)
        lines += [f"![safety over rounds]({SAFETY_PNG})", ""]
    if attack := results.get("attack_data"):
        first = ("source", "generator", "kept", "generated", "dropped")
        lines += ["## Attack data", "", *_bullets(attack, first)]
    if posthoc := results.get("posthoc"):
        first = ("level", "aligned", "helpful", "steps", "selected_step", "seconds", "dropped")
        checks = posthoc.get("checks") or []
        lines += ["## Post-hoc defense", "", *_bullets({k: v for k, v in posthoc.items() if k != "checks"}, first)]
        lines += _checks_section(checks, posthoc.get("selected_step"))
    lines += _detection_section(results, rounds, set(malicious))
    lines += _probe_section(rounds, set(malicious))
    if any(r.get(k) for r in rounds for k in ("clients", "dropped", "failed")):
        plot_clients(results, run_dir / CLIENTS_PNG)
        lines += [f"![clients per round]({CLIENTS_PNG})", ""]
    if timings := results.get("timings"):
        parts = [f"{k} {_num(v, '.1f')} s" for k, v in timings.items()]
        per_round = [r["seconds"] for r in rounds if isinstance(r.get("seconds"), int | float)]
        if per_round:
            parts.append(f"mean per round {sum(per_round) / len(per_round):.1f} s")
        lines += ["## Timings", "", "; ".join(parts) + ".", ""]

    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def summary_line(results: dict, report: Path) -> str:
    """The run in one line: safety and benign refusal at each evaluated stage, wall time, report.
    'safety 3.3 % initial -> 33.0 % after FL -> 98.0 % after post-hoc | benign refusal ... | 4 min 10 s | report: PATH'"""
    evals = results.get("eval") or {}
    stages = [s for s in STAGES if s in evals]

    def series(metric: str) -> str:
        return " -> ".join(f"{percent((evals[s] or {}).get(metric))} {STAGES[s]}" for s in stages) or DASH

    parts = [f"safety {series('safety_rate')}", f"benign refusal {series('benign_refusal_rate')}"]
    if isinstance(total := (results.get("timings") or {}).get("total"), int | float):
        parts.append(duration(total))
    return " | ".join(parts + [f"report: {report}"])
