"""Techno edge: the HTTP/JSON front door, translating REST to gRPC from the upstreams' `google.api.http` annotations."""
