# labmate: one image for the bot, the workers, beat and the MLflow tracking server (the `server`
# extra). docker-compose.yml gives each service its own health check; the one below fits the
# default command (the bot).
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
RUN pip install '.[server]' \
    && useradd --create-home --uid 10001 labmate \
    && mkdir -p /var/lib/labmate /mlartifacts \
    && chown labmate /var/lib/labmate /mlartifacts

USER labmate
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["labmate", "health", "bot", "--port", "3000"]
ENTRYPOINT ["labmate"]
CMD ["serve", "--port", "3000"]
