"""The production log_softmax: accurate where ``d - log(sum(exp(d)))`` saturates, on
any array-API backend.

``log_softmax(x, axis=None)``, ``softmax(x, axis=None)`` and ``logsumexp(a, axis=None,
b=None, keepdims=False, return_sign=False)`` have the signatures and semantics of
SciPy's, correctly rounded in every format. ``get_num_threads`` and ``set_num_threads`` say and set
how many threads its NumPy path uses (default: every core the process may run on;
``LOG_SOFTMAX_NUM_THREADS`` overrides). Nothing here imports an array backend at import
time.
"""

from ._api import logsumexp, softmax
from ._delegation import log_softmax
from ._threads import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "log_softmax", "logsumexp", "set_num_threads", "softmax"]
