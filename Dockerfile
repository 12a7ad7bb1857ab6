# One image for every Techno service; compose/Kubernetes choose the module to run.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY core core
COPY services services
COPY tools tools
COPY gen gen
COPY config config
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app techno
WORKDIR /app
COPY --from=build --chown=root:root /app/.venv /app/.venv
COPY --from=build --chown=root:root /app/config /app/config
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 TECHNO_HOST=0.0.0.0 TECHNO_EDGE_HOST=0.0.0.0
USER 10001
CMD ["python", "-m", "techno_gate"]
