"""Where a candidate runs: the backend cells (a library, a device, an execution mode),
the floating-point environment of its calls, and one call on a backend with its return
value checked as data (``_invoke``). The lowest room: it imports no other."""
