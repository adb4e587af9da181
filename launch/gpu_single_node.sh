#!/usr/bin/env bash
# One process driving every GPU of this machine (the mesh spans all local devices).
#
#   launch/gpu_single_node.sh python -m deepalign_jax.train --config configs/recipes/... --workdir DIR
#   DRY_RUN=1 launch/gpu_single_node.sh python -m ...
#
# CUDA_VISIBLE_DEVICES picks the GPUs; the config's mesh (data/fsdp/tensor, one of them -1)
# is laid over them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"
[[ $# -gt 0 ]] || die "usage: $0 python -m deepalign_jax.train --config ... --workdir ..."
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
run "$@" --distributed=off
