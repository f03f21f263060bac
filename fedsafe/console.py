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
WARNING_SOURCE = re.compile(r"^(\(\w+ pid=\d+\) )?\s+warnings\.warn\(")  # the code line Python prints under a warning
# Lines of flwr's simulation process about the federation's size, which do not apply once the
# connection sets options.num-supernodes (scripts/flower_env.sh does).
FEDERATION_SIZE_NOTES = (
    re.compile(r"Since flwr 1\.32, default simulated SuperNodes changed"),
    re.compile(r"To change federation size, use the following command"),
    re.compile(r"flwr federation simulation-config \S+ <superlink> --num-supernodes"),
)
# Ray's start-up banner and notes that repeat for every run.
RAY_NOTES = (
    re.compile(r"Started a local Ray instance"),
    re.compile(r"View the dashboard at"),
    re.compile(r"Tip: In future versions of Ray, Ray will no longer override accelerator"),
    re.compile(r"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"),
)


def dropped_lines(connection: dict) -> tuple[re.Pattern, ...]:
    """The patterns to drop for this SuperLink connection."""
    sized = "num-supernodes" in connection.get("options", {})
    return RAY_NOTES + (FEDERATION_SIZE_NOTES if sized else ())


class Console:
    def __init__(self, drop: tuple[re.Pattern, ...] = (), stream=None, live: bool | None = None):
        self.drop = drop
        self.stream = stream or sys.stdout
        self.live = logs.live_console(self.stream) if live is None else live
        self.status: str | None = None
        self.label = ""  # the status line's label: its final line (no longer progress) ends it
        self.skipped = False  # the last line was dropped (a dropped warning's source line follows it)

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        follows = self.skipped and WARNING_SOURCE.search(text)
        self.skipped = bool(follows) or any(p.search(text) for p in self.drop)
        if self.skipped:
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
