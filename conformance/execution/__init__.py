"""Running the cells: a cell's execution half, the isolated workers and their
supervisor, the wire protocol, the sandbox and the workers' limits, the fork server's
preload, the run's fingerprint, and the Dask cluster (``_distributed``, its agent
``_remote``). Imports only ``functions`` and ``backends``."""
