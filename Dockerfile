# One image for every mocktrade service and job; the command picks which.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
ENV MOCKTRADE_HOST=0.0.0.0 MOCKTRADE_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["mocktrade"]
