# ftassist on a CUDA machine: the app by default, or `ftassist serve` instead.
#
#   docker build -t ftassist .
#   docker run --gpus all -p 7860:7860 -v ftassist-data:/data ftassist
#   docker run --gpus all -p 8000:8000 -v ftassist-data:/data ftassist \
#       ftassist serve --model /data/merged --host 0.0.0.0 --port 8000 --api-key "$KEY"
FROM vllm/vllm-openai:latest

ENV PYTHONUNBUFFERED=1 \
    FTASSIST_CACHE=/data/cache \
    HF_HOME=/data/hf

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ftassist ./ftassist
COPY serving ./serving
COPY ftassist_app ./ftassist_app
COPY ftassist_cli ./ftassist_cli
COPY examples ./examples
COPY app.py ./

# vllm (with its CUDA torch) comes with the base image; the cuda extra keeps it, the app extra adds gradio.
RUN python3 -m pip install --no-cache-dir -e ".[cuda,app]"

VOLUME /data
EXPOSE 7860 8000
ENTRYPOINT []
CMD ["python3", "app.py", "--host", "0.0.0.0", "--port", "7860", "--runs-dir", "/data/runs"]
