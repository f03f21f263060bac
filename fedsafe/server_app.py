"""Flower ServerApp: config -> initial adapter -> robust FL -> post-hoc defense -> evals -> report."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedsafe import models
from fedsafe.attacks.poison_data import attack_summary
from fedsafe.config import from_run_config
from fedsafe.defenses import get_aggregator
from fedsafe.defenses.strategy import RobustStrategy
from fedsafe.eval.report import write_report
from fedsafe.logs import console_logging
from fedsafe.results import create_run_dir
from fedsafe.server import Server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    console_logging()
    settings = from_run_config(context.run_config)  # fails here, before any model loads
    run_dir = create_run_dir(settings)
    print(f"fedsafe run directory: {run_dir}", flush=True)
    server = Server(settings, run_dir)
    server.recorder.set("attack_data", attack_summary(settings))
    server.evaluate("initial", server.initial_state)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        rate = server.probe(server_round, models.from_arrays(arrays))
        return None if rate is None else MetricRecord({"safety_probe": rate})

    strategy = RobustStrategy(
        settings, get_aggregator(settings.defense.aggregator, **settings.defense.params),
        server.recorder, server.checkpoint, wait_seconds=settings.clients.timeout,
    )
    fl_started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=models.to_arrays(server.initial_state),
                            num_rounds=settings.num_server_rounds, timeout=settings.clients.timeout,
                            evaluate_fn=evaluate_fn)
    server.recorder.add_timing("rounds", time.perf_counter() - fl_started)
    final = models.from_arrays(result.arrays) if result.arrays is not None else server.initial_state
    server.evaluate("after_fl", final)
    if settings.posthoc.enabled:
        server.evaluate("after_posthoc", server.posthoc(final))
    server.recorder.add_timing("total", time.perf_counter() - started)
    report = write_report(run_dir)
    print(f"fedsafe report: {report}", flush=True)
