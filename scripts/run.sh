#!/usr/bin/env bash
# Set up (idempotent) and run the main job: a bag from the shared KITTI frame (or a generated scene when
# ../shared is absent) replayed through depth_completion_node over DDS; results go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/depth-completion demo --out out "$@"
