"""Use cases of the memory service, over the ports in ``ports``."""
