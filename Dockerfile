# One image for every role: worker (default), api, flower, or the CLI.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DOWNLOADER_DOWNLOAD_ROOT=/downloads

RUN useradd --create-home --uid 1000 downloader \
    && mkdir -p /downloads \
    && chown downloader:downloader /downloads

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .

USER downloader
VOLUME ["/downloads"]
CMD ["downloader", "worker"]
