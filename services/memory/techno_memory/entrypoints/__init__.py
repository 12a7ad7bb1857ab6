"""Protocol entry points of the memory service."""
