"""``python -m techno_core.healthcheck HOST:PORT [SERVICE]``: exit 0 if the gRPC server reports SERVING.

For container healthchecks where no grpc_health_probe binary is installed (Kubernetes uses native gRPC probes).
Point it at a service's plaintext health port (its gRPC port + 10 by default) with the name ``liveness`` or
``readiness``; the main port requires a client certificate.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, service = argv[0], argv[1] if len(argv) == 2 else ""
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
