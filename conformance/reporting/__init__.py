"""Reporting: the report, the measured support tables, the regression gate and the
exhaustive float32 figures, all read from results tables. The highest room: only the
top-level modules (``_runner``, ``_cli``, ...) import it."""
