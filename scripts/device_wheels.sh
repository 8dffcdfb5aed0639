#!/usr/bin/env bash
# Wheels a lent GPU machine lacks, for `bash scripts/bench_gpu.sh` there. The device image has torch, triton,
# lightning, scipy, matplotlib, rich, PyYAML and tensorboard (Python 3.12) but no network; medseg also needs monai,
# hydra-core, omegaconf, antlr4 and nibabel (SimpleITK is imported only for NRRD/MHA files, which the benchmarks do
# not use), and bench_train's nnU-Net peer needs dynamic-network-architectures (its PlainConvUNet imports only torch
# and numpy; timm/einops, its other requirements, serve other architectures). Run here, in the repository root
# (network to PyPI needed):
#
#   bash scripts/device_wheels.sh            # → .whl/ (about 6 MB), ignored through .git/info/exclude
#
# then, in the device call (carry: [".whl"]; medseg runs from the source tree: two links stand in for the package
# layout pyproject.toml maps, configs/ -> medseg.configs and kernels/ -> medseg_kernels):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && ln -sfn ../configs medseg/configs && ln -sfn kernels medseg_kernels \
#     && export PYTHONPATH=$PWD:/tmp/site && BUDGET_S=480 PACK=1 bash scripts/bench_gpu.sh "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for n in 28 27 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform any -d .whl \
    monai==1.6.1 hydra-core==1.3.8 omegaconf==2.3.1 nibabel==5.4.2 dynamic-network-architectures==0.4.4
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as a source archive only
ls -l .whl
