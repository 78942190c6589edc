# One image; the command picks the role: `participants serve` (API) or `participants worker`.
FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 participants
COPY --from=build /install /usr/local
WORKDIR /app
USER participants
ENV PARTICIPANTS_HOST=0.0.0.0 PARTICIPANTS_PORT=8080 PARTICIPANTS_DATA_DIR=/tmp/participants
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["participants", "serve"]
