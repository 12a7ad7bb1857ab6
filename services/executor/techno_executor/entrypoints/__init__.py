"""How the executor is called: the gRPC servicer."""
