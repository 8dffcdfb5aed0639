"""Keep the console readable: one log line per message, no third-party tips or deprecation noise."""

from __future__ import annotations

import logging
import warnings


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "litlogger" not in msg and "LitLogger" not in msg


def quiet_third_party() -> None:
    """Route Lightning's logs through the root logger once, drop its advertising tips and known-harmless warnings.

    Lightning adds its own console handler when it is first imported before logging is configured; importing it
    here first and then removing that handler leaves one handler (Hydra's or the root's): one line per message.
    """
    import lightning.pytorch  # noqa: F401 - so that its handlers exist before they are removed

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropTips())
    for pattern in (
        r".*LeafSpec.*",
        r".*does not have many workers.*",
        r".*The number of training batches.*",
        r".*is smaller than the logging interval.*",
        r".*Checkpoint directory .* exists and is not empty.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
