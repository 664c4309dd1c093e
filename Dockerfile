# Slim, non-root image that runs the bot; configuration comes from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install . && rm -rf /app/build /app/*.egg-info \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin bot

USER 10001
EXPOSE 3000
# Exec form, so SIGTERM reaches Python directly.
CMD ["python", "-m", "bot"]
