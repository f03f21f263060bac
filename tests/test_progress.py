"""The console: progress with rate and time left on a fake clock (fedsafe/progress.py), the
status line and log lines sharing a terminal (fedsafe/logs.py), and what `fedsafe run` shows of
a streamed run (fedsafe/console.py)."""

import io
import logging
import warnings

from fedsafe import logs
from fedsafe.console import Console, dropped_lines
from fedsafe.progress import Progress, describe, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _logger(name: str) -> tuple[logging.Logger, Lines]:
    logger = logging.getLogger(f"test.progress.{name}")
    logger.handlers, logger.propagate = [], False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    return logger, lines


def test_durations_and_descriptions():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0 s", "42 s", "3 min 05 s", "2 h 07 min"]
    assert describe("after_fl harmful", 0, 140, 0.0, "prompt") == "after_fl harmful: 0/140 prompts"
    # 64 prompts in 20 s: 3.2 prompts/s, 76 left -> 23.75 s
    assert describe("after_fl harmful", 64, 140, 20.0, "prompt") == \
        "after_fl harmful: 64/140 prompts, 3.2 prompts/s, 24 s left"
    # slower than one a second: time per unit; done: the total time
    assert describe("federated rounds", 2, 7, 130.0, "round") == \
        "federated rounds: 2/7 rounds, 1 min 05 s/round, 5 min 25 s left"
    assert describe("post-hoc fine-tune", 10, 10, 21.0, "step") == "post-hoc fine-tune: 10/10 steps, 2 s/step, 21 s"
    assert describe("probe", 1, 1, 3.0, "prompt") == "probe: 1/1 prompt, 3 s/prompt, 3 s"


def test_plain_progress_is_a_line_every_interval_and_one_at_the_end():
    clock, (logger, lines) = Clock(), _logger("plain")
    progress = Progress("attack step 2", 96, "prompt", logger=logger, clock=clock, live=False, every=15.0)
    for _ in range(6):  # six batches of 16 prompts, 8 s each
        clock.now += 8.0
        progress.advance(16)
    texts = [r.getMessage() for r in lines.records]
    assert texts == ["attack step 2: 32/96 prompts, 2.0 prompts/s, 32 s left",
                     "attack step 2: 64/96 prompts, 2.0 prompts/s, 16 s left",
                     "attack step 2: 96/96 prompts, 2.0 prompts/s, 48 s"]
    assert [getattr(r, "progress", False) for r in lines.records] == [True, True, False]  # the last one stays
    progress.close()
    assert len(lines.records) == 3  # closed once


def test_a_loop_stopped_early_still_reports_where_it_stopped():
    clock, (logger, lines) = Clock(), _logger("early")
    with Progress("benign", 10, "prompt", logger=logger, clock=clock, live=False):
        clock.now += 4.0
    assert [r.getMessage() for r in lines.records] == ["benign: 0/10 prompts"]


def test_live_status_line_stays_below_log_lines(monkeypatch):
    term = io.StringIO()
    monkeypatch.setattr("sys.stderr", term)
    logger = logging.getLogger("test.progress.live")
    logger.handlers, logger.propagate = [logs.ConsoleHandler(term)], False
    logger.setLevel(logging.INFO)
    clock = Clock()
    progress = Progress("safety probe", 4, "prompt", logger=logger, clock=clock, live=True)
    clock.now += 1.0
    progress.advance(2)
    assert term.getvalue().endswith("\r\033[Ksafety probe: 2/4 prompts, 2.0 prompts/s, 1 s left")
    logger.warning("round 3: dropped client 4")
    assert term.getvalue().endswith("\r\033[Kfedsafe WARNING: round 3: dropped client 4\n"
                                    "\r\033[Ksafety probe: 2/4 prompts, 2.0 prompts/s, 1 s left")
    clock.now += 1.0
    progress.advance(2)
    assert term.getvalue().endswith("\r\033[Kfedsafe INFO: safety probe: 4/4 prompts, 2.0 prompts/s, 2 s\n")


def test_progress_records_read_as_progress_lines():
    out = io.StringIO()
    handler = logs.ConsoleHandler(out)
    record = logging.LogRecord("fedsafe.generation", logging.INFO, "", 0, "x: 1/2 prompts", None, None)
    record.progress = True
    handler.emit(record)
    assert out.getvalue() == "fedsafe progress: x: 1/2 prompts\n"


def test_known_warnings_are_silenced_and_others_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logs.silence_known_warnings()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`torch.jit.script_method` is deprecated. Please switch to `torch.compile`", DeprecationWarning)
        warnings.warn("something fedsafe users must see", FutureWarning)
    assert [str(w.message) for w in caught] == ["something fedsafe users must see"]


STREAM = [
    "\u26a0\ufe0f Warning: `options.` fields in the SuperLink connection configuration are deprecated. Use ...\n",
    "Successfully started run 42\n",
    "\x1b[92mINFO \x1b[0m:      Starting RobustStrategy strategy:\n",
    "\x1b[92mINFO \x1b[0m:      \t\u251c\u2500\u2500 Number of rounds: 2\n",
    "\x1b[92mINFO \x1b[0m:      \n",
    "\x1b[92mINFO \x1b[0m:      [ROUND 1/2]\n",
    "WARNING :   Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.\n",
    "INFO :      Federation `@none/default` (3 simulated SuperNodes)\n",
    "INFO :      To change federation size, use the following command:\n",
    "INFO :      \tflwr federation simulation-config @none/default <superlink> --num-supernodes <N>\n",
    "\x1b[93mWARNING \x1b[0m:   fraction_evaluate is set to 0.0. Federated evaluation will be skipped.\n",
    "fedsafe progress: after_fl harmful: 32/140 prompts, 3.2 prompts/s, 34 s left\n",
    "(ClientAppActor pid=7) fedsafe INFO: client 3 round 1: loss 2.1 in 14.0s\n",
    "fedsafe progress: after_fl harmful: 64/140 prompts, 3.2 prompts/s, 24 s left\n",
    "fedsafe INFO: after_fl harmful: 140/140 prompts, 3.2 prompts/s, 44 s\n",
]


def test_console_drops_known_notes_and_draws_progress_as_one_line():
    term = io.StringIO()
    console = Console(dropped_lines({"options": {"num-supernodes": 3}}), stream=term, live=True)
    for line in STREAM:
        console.line(line)
    console.close()
    shown = term.getvalue()
    assert "SuperNodes changed" not in shown and "To change federation size" not in shown
    assert "`options.` fields" not in shown
    assert "strategy:" not in shown and "Number of rounds" not in shown and "fraction_evaluate" not in shown
    assert "\x1b[92mINFO \x1b[0m:      [ROUND 1/2]\n" in shown and "INFO \x1b[0m:      \n" not in shown
    assert "Federation `@none/default` (3 simulated SuperNodes)" in shown
    # the status line is redrawn under the client's line, and the final line replaces it
    assert ("\r\033[K(ClientAppActor pid=7) fedsafe INFO: client 3 round 1: loss 2.1 in 14.0s\n"
            "\r\033[Kafter_fl harmful: 32/140 prompts") in shown
    assert "\r\033[Kfedsafe INFO: after_fl harmful: 140/140 prompts, 3.2 prompts/s, 44 s\n" in shown
    assert "fedsafe progress:" not in shown


def test_console_without_a_terminal_keeps_progress_lines_and_unsized_notes():
    term = io.StringIO()
    console = Console(dropped_lines({"address": ":local:"}), stream=term, live=False)
    for line in STREAM:
        console.line(line)
    shown = term.getvalue().splitlines()
    assert "fedsafe progress: after_fl harmful: 32/140 prompts, 3.2 prompts/s, 34 s left" in shown
    assert any("SuperNodes changed" in line for line in shown)  # the federation does not set its size
    assert "\r" not in term.getvalue()


def test_console_drops_rays_accelerator_note_and_keeps_other_warnings():
    term = io.StringIO()
    console = Console(dropped_lines({"address": ":local:"}), stream=term, live=False)
    for line in [".venv/lib/python3.11/site-packages/ray/_private/worker.py:2051: FutureWarning: Tip: In future "
                 "versions of Ray, Ray will no longer override accelerator visible devices env var if num_gpus=0",
                 "  warnings.warn(", "fedsafe/x.py:3: UserWarning: something of fedsafe's own"]:
        console.line(line)
    assert term.getvalue() == "fedsafe/x.py:3: UserWarning: something of fedsafe's own\n"
