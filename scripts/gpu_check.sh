#!/usr/bin/env bash
# GPU check: xattn compare at the seed shape on CUDA in float32 and bfloat16, plus the bridge's
# CUDA check, all written to one file (default docs/gpu_check.txt; first argument overrides).
# Where no CUDA device is visible to both frameworks it says so and exits 0, changing nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/gpu_check.txt}"
python="${PYTHON:-python3}"

has_cuda=$("$python" - <<'PY'
try:
    import torch, jax
    print("yes" if torch.cuda.is_available() and any(d.platform == "gpu" for d in jax.devices()) else "no")
except Exception as error:  # a missing framework or a CPU-only jaxlib
    print(f"no ({type(error).__name__}: {error})")
PY
)
if [[ "$has_cuda" != yes ]]; then
    echo "gpu_check: no CUDA device visible to both torch and JAX here ($has_cuda); nothing to check."
    exit 0
fi

status=0
{
    echo "# xattn GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
    "$python" -m xattn env
    for dtype in float32 bfloat16; do
        echo
        echo "## xattn compare --seed-shape --device cuda --dtype $dtype"
        "$python" -m xattn compare --backends jax,torch --seed-shape --device cuda --dtype "$dtype" || status=1
    done
    echo
    echo "## scripts/gpu_bridge_check.py"
    "$python" scripts/gpu_bridge_check.py || status=1
} > "$out" 2>&1
echo "gpu_check: wrote $out (exit $status)"
exit $status
