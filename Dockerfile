# One image for every role (migrate, worker, beat, flower, api); docker-compose.yml picks the
# command. Installed in place (editable) so config/, sample data and migrations stay beside the
# code, where signalgen.paths finds them.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app && useradd --system --gid app --home-dir /app app \
    && mkdir -p /var/lib/signalgen && chown app:app /var/lib/signalgen

WORKDIR /app
COPY pyproject.toml README.md ./
COPY celeryconfig.py ./
COPY config ./config
COPY schemas ./schemas
COPY generators ./generators
COPY dispatcher ./dispatcher
COPY tasks ./tasks
COPY signalgen ./signalgen
# [plot]: `signalgen backtest --report` draws its charts in the container too. The bundled
# sample bars (signalgen/sample_data) come with the package; `signalgen db upgrade
# --sample-bars` (compose's migrate) loads them into an empty store.
RUN pip install -e ".[plot]" && chown -R app:app /app

USER app
# The default role; docker-compose.yml sets each service's own command.
CMD ["python", "-m", "tasks.worker", "--loglevel=INFO", "--concurrency=2"]
