"""MLflow tracking: the store, the Lightning logger, the outage spool, and finding runs.

Import the logger from ``workbench.tracking.logger`` (recipes name it ``workbench.tracking.logger.DurableMLflowLogger``);
this package imports nothing heavy so the CLI starts fast.
"""
