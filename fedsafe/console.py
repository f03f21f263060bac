"""What a person sees of a streamed `flwr run` (`fedsafe run`, scripts/run_default.sh).

Every line goes to the log file unchanged; the console drops lines known to say nothing to a
fedsafe user, and on a terminal draws fedsafe's progress updates (`fedsafe progress: ...`, see
fedsafe/progress.py) as one status line that rewrites itself instead of a line each.
"""

from __future__ import annotations

import re
import sys

from fedsafe import logs

PROGRESS_LINE = re.compile(r"fedsafe progress: ((.*): \d+/\d+ .*)")
# flwr's notes on the federation's size and on how it is configured, which do not apply once the
# connection sets options.num-supernodes, as scripts/flower_env.sh does (flwr is pinned to 1.42.*;
# a later flwr may need the config written another way).
FEDERATION_SIZE_NOTES = (
    re.compile(r"`options\.` fields in the SuperLink connection configuration are deprecated"),
    re.compile(r"Since flwr 1\.32, default simulated SuperNodes changed"),
    re.compile(r"To change federation size, use the following command"),
    re.compile(r"flwr federation simulation-config \S+ <superlink> --num-supernodes"),
)
FLWR_INFO = r"^(?:\x1b\[[0-9;]*m)?INFO\s*(?:\x1b\[[0-9;]*m)?\s*:\s*"  # flwr's "INFO :      " (colours optional)
# Flower's strategy prints its settings before round 1 and every record after the last round as
# indented blocks (fedsafe prints its rounds, evaluations and one summary line instead), and warns
# that federated evaluation is off, which fedsafe does on purpose (it evaluates on the server).
STRATEGY_BLOCKS = (
    re.compile(FLWR_INFO + r"(\t.*)?$"),  # the blocks' indented lines, and flwr's empty lines
    re.compile(FLWR_INFO + r"(Starting \w+ strategy:|Final results:)$"),
    re.compile(r"fraction_evaluate is set to 0\.0\. Federated evaluation will be skipped"),
)

# Ray's note, when flwr starts it, about a default that changes in a later Ray (accelerator env vars
# with num_gpus=0), and the source line Python prints under any warning.
RAY_NOTES = (
    re.compile(r"FutureWarning: Tip: In future versions of Ray, Ray will no longer override accelerator"),
    re.compile(r"^\s*warnings\.warn\($"),
)


def dropped_lines(connection: dict) -> tuple[re.Pattern, ...]:
    """The patterns to drop for this SuperLink connection."""
    sized = "num-supernodes" in connection.get("options", {})
    return STRATEGY_BLOCKS + RAY_NOTES + (FEDERATION_SIZE_NOTES if sized else ())


class Console:
    def __init__(self, drop: tuple[re.Pattern, ...] = (), stream=None, live: bool | None = None):
        self.drop = drop
        self.stream = stream or sys.stdout
        self.live = logs.live_console(self.stream) if live is None else live
        self.status: str | None = None
        self.label = ""  # the status line's label: its final line (no longer progress) ends it

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        if any(p.search(text) for p in self.drop):
            return
        progress = PROGRESS_LINE.search(text)
        if self.live and progress:
            self.status, self.label = progress.group(1), progress.group(2)
            logs.draw_status(self.stream, self.status)
            return
        if self.status:
            logs.draw_status(self.stream, None)
            if f"{self.label}: " in text:
                self.status = None
        self.stream.write(text + "\n")
        if self.status:
            logs.draw_status(self.stream, self.status)
        self.stream.flush()

    def close(self) -> None:
        if self.status:
            logs.draw_status(self.stream, None)
            self.status = None
