"""uvicorn's httptools protocol, answering a request it cannot parse with the edge's JSON error body.

A request that is not HTTP/1.1 (a bad request line, an invalid header, a broken chunk) never reaches the ASGI
app: uvicorn answers it itself, as ``text/plain`` "Invalid HTTP request received." with no trace id. Here it is
the edge's 400 like any other (``INVALID_ARGUMENT``, a JSON body, an ``X-Trace-Id`` under which the log keeps
the parser's own message), and the connection is closed as uvicorn does: after a parse error the stream cannot
be trusted to find the next request. Use it as ``uvicorn.Config(http=JsonErrorHttpToolsProtocol)``.
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from techno_edge.adapters.transcoding import dumps
from techno_edge.domain.errors import invalid_argument

log = logging.getLogger(__name__)
_IDS = RandomIdGenerator()
MESSAGE = "the request is not valid HTTP/1.1"


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        # No span exists for a request that was never parsed: a fresh trace id ties the answer to the log line.
        trace_id = format(_IDS.generate_trace_id(), "032x")
        log.warning("unparsable HTTP request answered 400 (trace id %s): %s", trace_id, msg)
        body = dumps(invalid_argument(MESSAGE).body(trace_id))
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-trace-id: " + trace_id.encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
