# One image for every role: mock, Locust master, Locust worker, analysis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENSTORM_DATA_DIR=/app/data

WORKDIR /app

# Dependencies first, so code edits do not reinstall them.
COPY pyproject.toml README.md ./
COPY tokenstorm ./tokenstorm
COPY mock_server ./mock_server
COPY analysis ./analysis
RUN pip install -e .

COPY locustfiles ./locustfiles
COPY configs ./configs
# The tokenizer file is baked in: containers never try to download it.
COPY data ./data
RUN python -c "from tokenstorm.core.tokenizer import count_tokens; assert count_tokens('hello world') == 2"

RUN mkdir -p /results
EXPOSE 8082 8089 5557
CMD ["python", "-m", "mock_server", "--host", "0.0.0.0"]
