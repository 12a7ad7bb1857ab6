"""Use cases of the executor, written against ports (Protocols) that adapters implement."""
