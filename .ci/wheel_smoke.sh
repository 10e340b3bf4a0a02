#!/usr/bin/env bash
# The package as users get it: build the wheel, install it (not editable) into a fresh virtual environment with
# torch from constraints.txt, and from a directory outside the source tree run the CLI on the bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$(pwd)"
PY="${PY:-python3}"
WORK="$(mktemp -d /tmp/evoprune-wheel.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$SRC" 2>&1 | grep -v -i -E "warning|^\s*$" || true
WHEEL="$(ls "$WORK"/dist/evoprune-*.whl)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
"$WORK/venv/bin/python" -m pip install -q -c "$SRC/constraints.txt" "$WHEEL" 2>&1 | grep -v -i warning || true
cd "$WORK"  # nothing of the source tree on sys.path from here on
E="$WORK/venv/bin/evoprune"
"$WORK/venv/bin/python" -c "import evoprune, sys; p = evoprune.__file__; sys.exit(0 if '$SRC' not in p else f'imported from the source tree: {p}')"
"$E" --help > /dev/null
"$E" list models
"$E" -q train --model vgg11 --width 0.25 --epochs 1 --out "$WORK/train"
"$E" prune --dry-run --checkpoint "$WORK/train/model.pt" --out "$WORK/prune"
echo "wheel smoke test passed: $(basename "$WHEEL")"
