"""fedsafe's console: its own log lines, one live status line on a terminal (fedsafe/progress.py),
and known third-party warnings silenced where they are raised.

Flower configures only its `flwr` logger; fedsafe's messages go through the `fedsafe` logger set
up here, once per process (ServerApp, ClientApp actor, node worker, CLI).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings

# Warnings that say nothing a fedsafe user can act on: (category, message regex, why).
KNOWN_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "transformers 5 renamed the property that peft reads; peft's code, not ours"),
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated",
     "torch's own torch/utils/mkldnn.py, loaded with bitsandbytes; flwr's processes show DeprecationWarnings"),
)
QUIET_LOGGERS = {  # third-party loggers whose lines repeat in every process and say nothing actionable
    # "Failed to load CPU gemm_4bit_forward from kernels-community" on import: an optional kernel
    # fetched from the Hub; 4-bit on CPU works without it
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
}
PROGRESS = "progress"  # the level word of progress updates: `fedsafe progress: ...`
_status: dict[str, str | None] = {"text": None}  # the live status line on this process's terminal


def silence_known_warnings() -> None:
    """Filter the warnings in KNOWN_WARNINGS and quiet QUIET_LOGGERS in this process; each fedsafe
    entry point calls this (PYTHONWARNINGS cannot carry a message regex to child processes)."""
    for category, message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def quiet_progress_bars() -> None:
    """No tqdm bars from transformers / huggingface_hub ("Loading weights", downloads): off a
    terminal each redraw becomes a line of the log."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # for processes and imports to come
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def live_console(stream=None) -> bool:
    """True when fedsafe's log lines reach a terminal that can redraw a line."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM", "") != "dumb"


def draw_status(stream, text: str | None) -> None:
    """Draw `text` as the live status line at the bottom of a terminal (None erases it)."""
    width = shutil.get_terminal_size((100, 20)).columns - 1
    stream.write("\r\033[K" + (text[:width] if text else ""))
    stream.flush()


def show_status(text: str | None) -> None:
    """This process's status line on stderr (fedsafe/progress.py); None erases it."""
    draw_status(sys.stderr, text)
    _status["text"] = text


class ConsoleHandler(logging.StreamHandler):
    """`fedsafe LEVEL: message`, or `fedsafe progress: ...` for a progress update (a record with
    `progress=True`, which `fedsafe run` draws as its status line); lifts the live status line
    above each line it writes."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self.setFormatter(logging.Formatter("fedsafe %(kind)s: %(message)s"))

    def format(self, record: logging.LogRecord) -> str:
        record.kind = PROGRESS if getattr(record, "progress", False) else record.levelname
        return super().format(record)

    def emit(self, record: logging.LogRecord) -> None:
        live = _status["text"]
        if not live:
            super().emit(record)
            return
        try:
            draw_status(self.stream, None)
            super().emit(record)
            draw_status(self.stream, live)
        except Exception:  # as StreamHandler does: a broken stream never breaks the run
            self.handleError(record)


def console_logging(level: int = logging.INFO) -> None:
    """`fedsafe LEVEL: message` lines on stderr, the known warnings silenced, and no third-party
    progress bars unless stderr is a terminal."""
    silence_known_warnings()
    if not live_console():
        quiet_progress_bars()
    logger = logging.getLogger("fedsafe")
    if not logger.handlers:
        logger.addHandler(ConsoleHandler())
        logger.setLevel(level)
        logger.propagate = False
