# Multi-stage: build the wheel (with the compiled nunet._native modules) in a full image, run it in
# a slim one. `make docker` builds it as nunet:dev.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY nunet ./nunet
RUN pip install --no-cache-dir "cython>=3.0" setuptools wheel \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 1000 nunet
USER nunet
WORKDIR /home/nunet
# QUIC p2p (UDP) and the local API (which only answers loopback callers inside the container).
EXPOSE 9000/udp
ENV DMS_REST_ADDR=127.0.0.1
ENTRYPOINT ["nunet"]
CMD ["run"]
