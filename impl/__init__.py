"""The production log_softmax: accurate where ``d - log(sum(exp(d)))`` saturates, on
any array-API backend.

``log_softmax(x, axis=None)`` has the signature and semantics of
``scipy.special.log_softmax``. Nothing here imports an array backend at import time.
"""

from ._delegation import log_softmax

__all__ = ["log_softmax"]
