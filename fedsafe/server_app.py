"""Flower ServerApp: config -> initial adapter -> robust FL -> post-hoc defense -> evals -> report."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedsafe import models, preflight
from fedsafe.attacks.poison_data import server_attack_summary
from fedsafe.config import ConfigError, from_run_config
from fedsafe.aggregators import get_aggregator
from fedsafe.federation.scaffold import control_variates
from fedsafe.optimizers import get_optimizer
from fedsafe.federation.strategy import RobustStrategy, with_dp
from fedsafe.eval.report import summary_line, write_report
from fedsafe.logs import console_logging
from fedsafe.results import create_run_dir
from fedsafe.server import Server
from fedsafe.federation.transport import PackedGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    console_logging()
    try:  # fails here, before any model loads
        settings = from_run_config(context.run_config)
        preflight.check(settings)
    except ConfigError as err:
        print(f"fedsafe: error: {err}", flush=True)  # the line fedsafe.check_run shows
        raise
    run_dir = create_run_dir(settings)
    print(f"fedsafe run directory: {run_dir}", flush=True)
    aggregator = get_aggregator(settings.defense.aggregator, **settings.defense.params)
    optimizer = get_optimizer(settings.fl.optimizer, **settings.fl.optimizer_params)
    controls = control_variates(settings)
    server = Server(settings, run_dir, aggregator, optimizer, controls)
    first_round, global_state = server.resume_point()
    if "attack_data" not in server.recorder.data:
        server.recorder.set("attack_data", server_attack_summary(settings))
    if settings.eval.initial and "initial" not in server.recorder.data["eval"]:
        server.evaluate("initial", server.initial_state)

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower calls this with each round's final global adapter (after DP noise, if any)."""
        absolute, state = server_round + first_round - 1, models.from_arrays(arrays)
        if server_round:
            server.checkpoint(absolute, state)
        rate = server.probe(absolute, state)
        return None if rate is None else MetricRecord({"safety_probe": rate})

    remaining = settings.num_server_rounds - first_round + 1
    if remaining > 0:
        strategy = with_dp(RobustStrategy(settings, aggregator, server.recorder, optimizer=optimizer,
                                          controls=controls, probe=server.behaviour_probe,
                                          wait_seconds=settings.clients.timeout, first_round=first_round), settings)
        fl_started = time.perf_counter()
        result = strategy.start(grid=PackedGrid(grid), initial_arrays=models.to_arrays(global_state),
                                num_rounds=remaining, timeout=settings.clients.timeout, evaluate_fn=after_round)
        server.recorder.add_timing("rounds", time.perf_counter() - fl_started)
        if server.behaviour_probe is not None:
            server.recorder.add_timing("behaviour_probe", server.behaviour_probe.seconds)
        global_state = models.from_arrays(result.arrays) if result.arrays is not None else global_state
        server.recorder.set("attack_data", server_attack_summary(settings))  # with the manifest clients wrote
    server.evaluate("after_fl", global_state)
    if settings.posthoc.enabled:
        server.evaluate("after_posthoc", server.posthoc(global_state))
    server.recorder.add_timing("total", time.perf_counter() - started)
    report = write_report(run_dir)
    print(f"fedsafe report: {report}", flush=True)
    print(f"fedsafe summary: {summary_line(server.recorder.data, report)}", flush=True)
