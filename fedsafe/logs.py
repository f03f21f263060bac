"""Console logging for fedsafe's own messages (Flower configures only its `flwr` logger)."""

import logging


def console_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("fedsafe")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fedsafe %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
