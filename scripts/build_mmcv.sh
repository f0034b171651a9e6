#!/usr/bin/env bash
# Build mmcv 2.1.0 (CPU ops) against the pinned torch and cache the wheel.
# Usage: scripts/build_mmcv.sh OUT_DIR   (prints the wheel path on success)
# mmcv has no wheels for this torch; its setup.py needs setuptools<70 (pkg_resources)
# and asks for -std=c++14/17, while torch 2.14's headers need C++20.
set -euo pipefail
out=${1:?usage: build_mmcv.sh OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
torch_pin=$(grep -E '^torch==' "$root/requirements.lock" | cut -d' ' -f1)
mmcv_version=2.1.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "uv==0.13.8"
uv="$work/venv/bin/uv"
"$uv" pip install -q --python "$work/venv/bin/python" "$torch_pin" numpy
"$uv" pip install -q --python "$work/venv/bin/python" --no-deps "setuptools==69.5.1" "wheel==0.45.1" "ninja==1.13.0"
"$work/venv/bin/pip" download -q --no-deps --no-binary :all: "mmcv==$mmcv_version" -d "$work/src"
tar -xzf "$work/src/mmcv-$mmcv_version.tar.gz" -C "$work/src"
cd "$work/src/mmcv-$mmcv_version"
sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' setup.py
grep -q 'c++20' setup.py || { echo "build_mmcv: could not patch the C++ standard in setup.py" >&2; exit 1; }
MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(nproc) \
  "$work/venv/bin/pip" wheel -q --no-build-isolation --no-deps . -w "$work/dist"
mkdir -p "$out"
wheel=$(ls "$work/dist"/mmcv-*.whl)
cp "$wheel" "$out/"
echo "$out/$(basename "$wheel")"
