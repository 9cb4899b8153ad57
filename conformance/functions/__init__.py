"""What is judged (the plan's axes): the functions and their oracles, their candidates,
the input families (the corpus, logsumexp's weights, the peers' own suites, every
float32 pair) and the expected failures. Imports only ``backends``."""
