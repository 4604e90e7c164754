# ftassist on a CUDA machine: the app by default, or `ftassist serve` instead.
#
#   docker build -t ftassist .
#   docker run --gpus all -p 7860:7860 -v ftassist-data:/data ftassist
#   docker run --gpus all -p 8000:8000 -v ftassist-data:/data ftassist \
#       ftassist serve --model /data/merged --host 0.0.0.0 --port 8000 --api-key "$KEY"
# The base image's tag is requirements.txt's vllm pin (tests/test_packaging.py checks): its vLLM and the CUDA
# torch that vLLM was built against stay as they are, and requirements.txt pins everything else to the
# versions `make test` runs (pip's resolution of that file against PyPI: tests/test_space_build.py).
FROM vllm/vllm-openai:v0.32.0

ENV PYTHONUNBUFFERED=1 \
    FTASSIST_CACHE=/data/cache \
    HF_HOME=/data/hf

WORKDIR /app
COPY requirements.txt ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md ./
COPY ftassist ./ftassist
COPY serving ./serving
COPY ftassist_app ./ftassist_app
COPY ftassist_cli ./ftassist_cli
COPY examples ./examples
COPY app.py ./

# The project itself, without re-resolving what is pinned above.
RUN python3 -m pip install --no-cache-dir --no-deps -e .

VOLUME /data
EXPOSE 7860 8000
ENTRYPOINT []
CMD ["python3", "app.py", "--host", "0.0.0.0", "--port", "7860", "--runs-dir", "/data/runs"]
