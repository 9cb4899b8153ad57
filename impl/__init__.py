"""The production log_softmax: accurate where ``d - log(sum(exp(d)))`` saturates, on
any array-API backend.

``log_softmax(x, axis=None)`` has the signature and semantics of
``scipy.special.log_softmax``. ``get_num_threads`` and ``set_num_threads`` say and set
how many threads its NumPy path uses (default: every core the process may run on;
``LOG_SOFTMAX_NUM_THREADS`` overrides). Nothing here imports an array backend at import
time.
"""

from ._delegation import log_softmax
from ._threads import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "log_softmax", "set_num_threads"]
