"""report.md and the PNG plots, from a realistic results.json and from ones missing parts."""

import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest

from fedsafe.eval.plots import plot_clients, plot_safety
from fedsafe.eval.report import summary_line, write_report

FIXTURE = Path(__file__).with_name("results_fixture.json")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPTIONAL = ["eval", "detection", "attack_data", "posthoc", "timings", "run_dir"]


@pytest.fixture
def results() -> dict:
    return json.loads(FIXTURE.read_text())


def _run_dir(tmp_path: Path, results: dict) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)  # (height, width, channels)
    assert image.shape[0] >= 200 and image.shape[1] >= 300
    assert image.std() > 0.05  # not a blank canvas
    assert path.stat().st_size < 200_000  # DPI 100 keeps files small


def test_report_from_fixture(tmp_path, results):
    shutil.copy(FIXTURE, tmp_path / "results.json")
    path = write_report(tmp_path)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    _assert_png(tmp_path / "safety.png")
    _assert_png(tmp_path / "clients.png")
    assert "![safety over rounds](safety.png)" in text
    assert "![clients per round](clients.png)" in text

    labels = {"initial": "initial", "after_fl": "after FL", "after_posthoc": "after post-hoc"}
    for stage, values in results["eval"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {labels[stage]} |"))
        assert f"{100 * values['safety_rate']:.1f} %" in row
        assert f"{100 * values['benign_refusal_rate']:.1f} %" in row
        assert f"{values['helpfulness']:.3f}" in row
    assert "| after FL | 30.0 % | 2.0 % | -1.700 |" in text  # the fixture's numbers, by hand

    assert "| malicious clients | 7, 8, 9 |" in text
    assert "| aggregator | multikrum (num-malicious: 1) |" in text
    assert "| clients per round / total | 3 / 10 |" in text
    assert "| post-hoc defense | L1 |" in text
    assert "| 1 | 2, 5, 7* | 7* | 1.00 | 1.00 | \u2013 |" in text
    assert "| 2 | 1, 8*, 9* | 1, 9* | 0.50 | 0.50 | \u2013 |" in text
    assert "| 3 | 0, 3 | \u2013 | \u2013 | \u2013 | 7* (non-finite values) |" in text
    assert "precision 0.67, recall 0.67 (tp 2, fp 1, fn 1, tn 4)" in text
    attack = "## Attack data\n\n- source: generated\n- generator: smollm2-135m-instruct\n"
    assert attack + "- kept: 40\n- generated: 48\n- dropped: short_instruction: 0," in text
    assert "refusal: 5, short_answer: 0, duplicate: 3\n" in text
    assert "## Post-hoc defense\n\n- level: L1\n- aligned: 20\n- helpful: 20\n" in text
    assert "- seconds: 20.1 s\n- dropped: none\n" in text
    assert "LLM judge" not in text  # not configured in the fixture: no column


@pytest.mark.parametrize("missing", OPTIONAL)
def test_report_without_optional_part(tmp_path, results, missing):
    del results[missing]
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert text.startswith("# fedsafe report")
    assert "## Detection" in text  # per-round rows remain


def test_report_without_round_extras(tmp_path, results):
    for r in results["rounds"]:
        for key in ("safety_probe", "detection", "dropped", "seconds"):
            r.pop(key, None)
    del results["eval"]["after_posthoc"]
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert "after post-hoc" not in text and "| initial | 5.0 % |" in text
    _assert_png(tmp_path / "safety.png")
    _assert_png(tmp_path / "clients.png")


def test_report_failed_clients_and_kept_previous(tmp_path, results):
    results["rounds"][1]["failed"] = [{"node_id": 9, "partition_id": 4, "reason": "timeout"}]
    results["rounds"][1]["kept_previous"] = True
    results["eval"]["after_fl"]["llm_judge"] = 6.25
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert "| 2 \u2020 | 1, 8*, 9* | 1, 9* | 0.50 | 0.50 | 4 (timeout) |" in text
    assert "\u2020 too few valid replies" in text
    assert "| after FL | 30.0 % | 2.0 % | -1.700 | 6.25 |" in text
    assert "| initial | 5.0 % | 0.0 % | -1.900 | \u2013 |" in text


def test_report_says_when_flags_are_the_ground_truth(tmp_path, results):
    note = "its flags are the ground truth, not a detection"
    assert note not in write_report(_run_dir(tmp_path, results)).read_text()
    results["rounds"][0]["ground_truth"] = True
    assert note in write_report(_run_dir(tmp_path, results)).read_text()


def test_report_minimal(tmp_path):
    run_dir = _run_dir(tmp_path, {"config": {}, "rounds": []})
    text = write_report(run_dir).read_text()
    assert text.startswith("# fedsafe report")
    assert "## Evaluation" not in text and not (run_dir / "safety.png").exists()


def test_plots_handle_empty_results(tmp_path):
    _assert_png(plot_safety({}, tmp_path / "safety.png"))
    plot_clients({"rounds": [{"round": 1, "clients": []}]}, tmp_path / "clients.png")
    assert (tmp_path / "clients.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plots_are_deterministic(tmp_path, results):
    for plot in (plot_safety, plot_clients):
        first = plot(results, tmp_path / "a.png").read_bytes()
        assert plot(results, tmp_path / "b.png").read_bytes() == first


def test_report_shows_what_the_safety_probe_saw(tmp_path, results):
    assert "## Behaviour probe" not in write_report(_run_dir(tmp_path, results)).read_text()  # other aggregators
    results["rounds"][0]["aggregator"] = {"probe": [[0.8, 0.21, 0.05], [0.45, 0.1, 0.0], [-0.6, -0.3, 0.1]],
                                          "fallback": "fedavg", "probe_factors": [1.0, 0.97, 16.0]}
    results["rounds"][1]["aggregator"] = {"probe": [[0.5, 0.2]], "fallback": "fedavg"}  # a run before probe scales
    # and before the over-refusal column
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert "| 1 | 2 | x1.00 | +0.800 | +0.210 | +0.050 | kept, weight 0.50 |" in text
    assert "| 1 | 7* | x16.00 | -0.600 | -0.300 | +0.100 | flagged |" in text
    assert "| \u2013 | +0.500 | +0.200 | \u2013 |" in text


def test_report_columns_of_the_papers_metrics_only_when_recorded(tmp_path, results):
    """More judges, RM and MT-1 add columns (ungraded answers counted in the cell); a stage that
    lacks a value shows a dash; the configuration table says how answers were generated."""
    results["config"] |= {"eval.judges": "paper-rule,OpenSafetyLab/MD-Judge-v0.1", "eval.temperature": 0.7,
                          "eval.top-p": 1.0, "eval.max-new-tokens": 1024}
    results["eval"]["after_fl"] |= {
        "safety_rates": {"rule": 0.3, "paper-rule": 0.45, "OpenSafetyLab/MD-Judge-v0.1": 0.5},
        "rm": -2.3456, "mt1": 5.25, "mt1_questions": 80, "mt1_ungraded": 2}
    results["eval"]["after_posthoc"] |= {"safety_rates": {"rule": 0.85, "paper-rule": 0.9}, "rm": 1.5, "mt1": 6.0,
                                         "mt1_questions": 80, "mt1_ungraded": 0}
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert ("| stage | safety rate | safety (paper-rule) | safety (MD-Judge-v0.1) | benign refusal | helpfulness "
            "| RM | MT-1 |") in text
    assert "| initial | 5.0 % | \u2013 | \u2013 | 0.0 % | -1.900 | \u2013 | \u2013 |" in text
    assert "| after FL | 30.0 % | 45.0 % | 50.0 % | 2.0 % | -1.700 | -2.346 | 5.25 (2 ungraded) |" in text
    assert "| after post-hoc | 85.0 % | 90.0 % | \u2013 | 5.0 % | -1.750 | 1.500 | 6.00 |" in text
    assert "| safety judges | rule, paper-rule, OpenSafetyLab/MD-Judge-v0.1 |" in text
    assert "| eval answers | sampled at temperature 0.7, top-p 1.0, up to 1024 new tokens |" in text
    assert "RM: mean reward-model score" in text and "MT-1" in text


def test_report_without_the_papers_metrics_keeps_its_columns(tmp_path, results):
    results["config"] |= {"eval.max-new-tokens": 40, "eval.temperature": 0.0}
    text = write_report(_run_dir(tmp_path, results)).read_text()
    assert "| stage | safety rate | benign refusal | helpfulness |\n" in text
    assert "RM" not in text and "MT-1" not in text and "safety (" not in text
    assert "| eval answers | greedy, up to 40 new tokens |" in text


def test_summary_line_of_a_run(results):
    report = Path("/runs/x/report.md")
    assert summary_line(results, report) == (
        "safety 5.0 % initial -> 30.0 % after FL -> 85.0 % after post-hoc | "
        "benign refusal 0.0 % initial -> 2.0 % after FL -> 5.0 % after post-hoc | 3 min 20 s | report: /runs/x/report.md")
    partial = {"eval": {"after_fl": {"safety_rate": 0.5}}}  # no initial stage, no timings, no refusal rate
    assert summary_line(partial, report) == \
        "safety 50.0 % after FL | benign refusal \u2013 after FL | report: /runs/x/report.md"
    assert summary_line({}, report) == "safety \u2013 | benign refusal \u2013 | report: /runs/x/report.md"


def test_report_names_the_judges_as_the_run_keyed_its_rates(tmp_path, results):
    """Rule names are case-insensitive: the metrics say 'paper-rule', and so must the report."""
    results["config"] |= {"eval.judge": "rule", "eval.judges": "PAPER-RULE,rule"}
    assert "| safety judges | rule, paper-rule |" in write_report(_run_dir(tmp_path, results)).read_text()
