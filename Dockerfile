# One image; the command picks the role: `participants serve` (API), `participants worker`, or
# `participants migrate`. Versions are pinned: the base image here, the packages by the lock file.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /app
COPY requirements/constraints.txt ./requirements/
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --prefix=/install --constraint requirements/constraints.txt .

FROM python:3.11.11-slim-bookworm
# A numeric user: Kubernetes' runAsNonRoot can only verify a number.
RUN groupadd --system --gid 10001 participants \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin participants
COPY --from=build /install /usr/local
WORKDIR /app
USER 10001:10001
ENV PARTICIPANTS_HOST=0.0.0.0 PARTICIPANTS_PORT=8080 PARTICIPANTS_DATA_DIR=/tmp/participants
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["participants", "serve"]
