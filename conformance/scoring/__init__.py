"""Scoring and recording: a cell's data scored against the oracle (``_score``), the
budgets, the oracle's cache, what judged a cell (``_judge``) and the results directory
and table (``_results``). Imports only the rooms below it (``execution``,
``functions``, ``backends``). Not named ``results``: the repository ignores folders of
that name (a sweep's output)."""
