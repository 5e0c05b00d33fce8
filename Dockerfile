# The image the Prefect Docker work pool runs; .github/workflows/image.yml builds it for
# linux/amd64 and linux/arm64, smoke-runs it and pushes the `production`, `latest` and `<git sha>`
# tags (the SHA tag is what a rollback pins: docs/operations.md).
# Only code is copied (explicit list below, plus .dockerignore as a second fence): never an env
# file or a secret. Secrets reach the container at run time (docs/operations.md).
FROM python:3.11.15-slim-bookworm

# Prefect settings: bond_reporting/prefect_env.py (tests/flow/test_packaging.py checks they agree).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BOND_LOCAL_DIR=/tmp/bond-reporting \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_LOGGING_EXTRA_LOGGERS=bond_reporting,config,microstrategy_to_s3,bond_data,bond_calculations \
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore

WORKDIR /app/atd-bond-reporting

# Dependencies first, so this layer is rebuilt only when the lock changes. requirements.lock pins
# every package (transitive ones too) with its hashes (`make lock` from requirements.txt): two
# builds of one commit install the same bytes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The code, owned by root and read-only for the user that runs it.
COPY microstrategy_to_s3.py bond_data.py bond_calculations.py ./
COPY bond_reporting/ ./bond_reporting/
COPY config/ ./config/
COPY flows/ ./flows/

# A numeric non-root user, so Kubernetes-style `runAsNonRoot` checks can verify it.
RUN groupadd --gid 10001 etl \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin etl
USER 10001:10001

# The Prefect worker overrides this with its own command; a bare `docker run` runs the flow once.
CMD ["python", "-m", "flows.pipeline"]
