#!/usr/bin/env bash
# GPU checks and benchmarks on a CUDA host with no network: `bash benchmarks/gpu.sh [OUT_DIR]`.
#
# Packages the host lacks travel as wheels in .whl/ (installed into /tmp/site), and models in .gpu/bentoml
# (a copy of a BentoML store; otherwise the default store is used). Runs `pytest -m gpu` and the CUDA
# benchmark of the image classifiers, and copies the results and the log into OUT_DIR (default
# benchmarks/results). SUITE_COMMIT names the source commit where the tree has no git.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
if [ -d .gpu/bentoml ]; then
  rm -rf /tmp/bentoml && cp -r .gpu/bentoml /tmp/bentoml && export BENTOML_HOME=/tmp/bentoml
fi
export BENTOML_DO_NOT_TRACK=true HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu-host.txt"
status=0
"$PY" -m pytest -m gpu -p no:cacheprovider -q tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log" || status=1
for task in ${GPU_TASKS:-malaria}; do
  "$PY" -m benchmarks "$task" --device cuda --concurrency 1,8,32,64 --requests 1000 --out "$out" || status=1
done
exit $status
