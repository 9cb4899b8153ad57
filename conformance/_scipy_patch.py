"""pytest plugin of the ``scipy-suite`` family (loaded with ``-p`` in the suite's own
pytest process, never otherwise): SciPy's log_softmax tests with the name they call,
``log_softmax`` in the test module, replaced by the candidate named in the
environment (``CONFORMANCE_SUITE_TARGET``, a "module:function")."""

from __future__ import annotations

import os
from typing import Any

from ._candidates import load_target


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    fn = load_target(os.environ["CONFORMANCE_SUITE_TARGET"])
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "log_softmax"):
            module.log_softmax = fn
