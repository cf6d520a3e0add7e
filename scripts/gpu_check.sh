#!/usr/bin/env bash
# Every GPU figure in one run (about 5 minutes on one modern GPU); see scripts/gpu_check.py for the parts.
#   scripts/gpu_check.sh OUT_DIR [--official PATH_TO_AN_OFFICIAL_SRFLOW_CHECKOUT] [--dry-run]
# Python, first that works: $GPU_CHECK_PYTHON; .venv/bin/python if it imports torch; python3 if it already
# has everything requirements.txt asks for (checked offline); else a fresh venv .venv-gpu-check with
# requirements.txt installed into it.
set -uo pipefail
cd "$(dirname "$0")/.."

satisfies_requirements() {  # true when "$1" has every package of requirements.txt at an allowed version
    "$1" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    from packaging.requirements import Requirement
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement
import torch  # noqa: F401  (installed is not enough: it must load)
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if line:
        req = Requirement(line)
        try:
            if not req.specifier.contains(version(req.name).split("+")[0], prereleases=True):
                sys.exit(1)
        except PackageNotFoundError:
            sys.exit(1)
PY
}

describe() {  # "3.11.9 torch 2.x": also the check that "$1" imports torch
    "$1" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)' 2>/dev/null
}

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY="$GPU_CHECK_PYTHON"
elif [ -x .venv/bin/python ] && VERSION=$(describe .venv/bin/python); then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && satisfies_requirements python3; then
    PY=python3
else
    echo "[gpu_check] installing requirements.txt into a fresh venv .venv-gpu-check" >&2
    python3 -m venv .venv-gpu-check && .venv-gpu-check/bin/python -m pip install --quiet -r requirements.txt \
        || { echo "error: could not install requirements.txt into .venv-gpu-check" >&2; exit 2; }
    PY=.venv-gpu-check/bin/python
fi
echo "[gpu_check] python: $PY (${VERSION:-$(describe "$PY")})"
exec "$PY" scripts/gpu_check.py "$@"
