# labmate: one image for the bot, the workers, beat and the MLflow tracking server (the `server`
# extra). Its health check fits whatever the container runs (`labmate health` without a service
# reads the container's command); docker-compose.yml names each service's explicitly.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LABMATE_HOME=/var/lib/labmate

WORKDIR /app
COPY pyproject.toml README.md ./
COPY labmate ./labmate
COPY bot ./bot
COPY tasks ./tasks
COPY models ./models
COPY examples ./examples
COPY conversations ./conversations
# git: launch workers clone projects given by a git URI (MLflow Projects' fetch runs git).
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
RUN pip install '.[server]' \
    && useradd --create-home --uid 10001 labmate \
    && mkdir -p /var/lib/labmate /mlartifacts \
    && chown labmate /var/lib/labmate /mlartifacts

USER labmate
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["labmate", "health"]
ENTRYPOINT ["labmate"]
CMD ["serve", "--port", "3000"]
