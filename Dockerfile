# The stack's image for a single-host install (docker-compose.yml): MLflow, Prefect's
# server and worker, the webhook receiver, the fleet server and the Evidently UI all
# run from it. Serving is the Bento image (`bentoml build` + `bentoml containerize`).
# Not built on the machine this was written on (it has no Docker engine).
FROM python:3.11-slim-bookworm

WORKDIR /app
COPY requirements.lock ./
# --no-deps: the lock is the whole set (lock-overrides.txt: why tf-keras's
# `tensorflow` is not in it).
COPY wheels/ wheels/
# The lock pins torch 2.13.0+cpu: PyTorch's CPU index has it; nothing is built.
RUN pip install --no-cache-dir --only-binary=:all: --no-deps --find-links wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .

ENV EDGELOOP_HOST=0.0.0.0 \
    EDGELOOP_STATE_DIR=/state \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1
