# The snlm worker (and, with another command, the CLI). Dependencies come from the hash-checked lock file.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY config ./config
COPY lab ./lab
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY worker.py ./
RUN pip install --no-cache-dir --no-deps -e . && useradd --system --uid 10001 snlm
USER snlm
CMD ["python", "worker.py"]
