# syntax=docker/dockerfile:1
# routeyard images. `docker build --target cpu -t routeyard:cpu .`
# (The GPU router image with vLLM is added with the vLLM engine.)

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY router router
COPY consumers consumers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

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
