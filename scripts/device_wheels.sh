#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.py needs on the lent GPU machine (issue 17), and print the `run` call.
#
# That machine (kind nvidia-h200: Python 3.12, torch 2.11 + CUDA 13, x86-64) reaches no package registry and
# receives at most 64 MiB: the tracked and untracked-not-ignored files of the checkout plus the carried paths.
# It already has torch, torchvision, timm, accelerate, safetensors, tqdm, matplotlib, tensorboard, numpy,
# pillow, pyyaml, packaging, huggingface-hub and pytorch-lightning (/work/.library/device/KINDS.md). This
# script puts into ignored folders of the checkout:
#   .whl/      the wheels it lacks, for cp312 manylinux x86-64: lightly, kornia + kornia_rs, omegaconf +
#              antlr4-python3-runtime (only an sdist on PyPI: built here into a pure-Python wheel), diffsort,
#              and hydra-core (a requirement of lightly); every Requires-Dist of these is checked below
#   .devdata/  the Fashion-MNIST IDX files (gzip), read by gpu_check.py as .devdata/fashion-mnist
# faiss is not carried: faiss-gpu 1.15.1 is a 135 MB wheel built for CUDA 12 (the GPU k-NN there runs
# through knn_classify's torch path), and faiss-cpu would make knn_classify's "auto" search on the CPU.
# Then it checks that everything that travels stays under 64 MiB and fails loudly otherwise.
#
#   scripts/device_wheels.sh            (PYTHON=python3 by default; any Python with pip works)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
LIMIT=$((64 * 1024 * 1024))
WHEELS=(lightly==1.6.0 kornia==0.9.0 kornia_rs==0.2.0 omegaconf==2.3.1 hydra-core==1.3.8 diffsort==0.2.0)
SDIST_WHEELS=(antlr4-python3-runtime==4.9.3) # no wheel on PyPI; pure Python, so built here
# what the device has that these wheels require (KINDS.md's package list), lower-case, '-' for '_'
DEVICE_HAS="torch torchvision numpy tqdm pyyaml packaging pytorch-lightning pillow"
FMNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
FMNIST_DIRS=(/usr/share/datasets/fashion-mnist ./data/FashionMNIST/raw)

die() { echo "device_wheels.sh: $*" >&2; exit 1; }

for path in .whl/x .devdata/x; do
    git check-ignore -q "$path" || die "${path%/x}/ is not ignored by git; add /${path%/x}/ to .gitignore"
done

# 1. wheels: download, keep exactly one file per pinned package (two versions stop the install there)
mkdir -p .whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${WHEELS[@]}"
"$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w .whl "${SDIST_WHEELS[@]}"
"$PYTHON" - "${WHEELS[@]}" "${SDIST_WHEELS[@]}" <<'EOF'
import re, sys
from pathlib import Path
def norm(name): return re.sub(r"[-_.]+", "_", name).lower()
wanted = {norm(p.split("==")[0]): p.split("==")[1] for p in sys.argv[1:]}
for wheel in sorted(Path(".whl").glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    if wanted.get(norm(name)) != version:
        print(f"removing {wheel.name}: not one of the pinned wheels")
        wheel.unlink()
missing = sorted(set(wanted) - {norm(w.name.split("-")[0]) for w in Path(".whl").glob("*.whl")})
if missing:
    sys.exit(f"device_wheels.sh: no wheel for {', '.join(missing)}")
EOF

# 2. their requirements: each must be carried or already on the device
"$PYTHON" - "$DEVICE_HAS" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from pip._vendor.packaging.requirements import Requirement
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
wheels = sorted(Path(".whl").glob("*.whl"))
available = set(sys.argv[1].split()) | {norm(w.name.split("-")[0]) for w in wheels}
problems = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    needs = []
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate({"python_version": "3.12", "extra": ""}):
                needs.append(norm(req.name))
    lacking = [n for n in needs if n not in available]
    print(f"{wheel.name}: requires {', '.join(needs) or 'nothing'}" + (f"; LACKING {lacking}" if lacking else ""))
    problems += lacking
if problems:
    sys.exit(f"device_wheels.sh: requirements neither carried nor on the device: {sorted(set(problems))}")
EOF

# 3. Fashion-MNIST, gzip-compressed (the raw training images alone are 47 MB)
mkdir -p .devdata/fashion-mnist
for name in "${FMNIST_FILES[@]}"; do
    target=.devdata/fashion-mnist/$name.gz
    [ -s "$target" ] && continue
    for dir in "${FMNIST_DIRS[@]}"; do
        if [ -s "$dir/$name.gz" ]; then cp "$dir/$name.gz" "$target"; break; fi
        if [ -s "$dir/$name" ]; then gzip -c "$dir/$name" >"$target"; break; fi
    done
    [ -s "$target" ] || die "Fashion-MNIST file $name not found in ${FMNIST_DIRS[*]}"
done

# 4. the size of what travels: tracked + untracked-not-ignored files, shared/, and the carried folders
sizes() { xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"
done | sizes)
shared=0
[ -d shared ] && shared=$(find shared -type f -print0 | sizes)
whl=$(find .whl -type f -print0 | sizes)
devdata=$(find .devdata -type f -print0 | sizes)
total=$((tree + shared + whl + devdata))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "travelling: tree $(mib "$tree") + shared/ $(mib "$shared") + .whl $(mib "$whl") + .devdata $(mib "$devdata")" \
    "= $(mib "$total") of $(mib "$LIMIT")"
[ "$total" -lt "$LIMIT" ] || die "$(mib "$total") would travel, over the 64 MiB limit: trim the checkout or .devdata"

cat <<'EOF'

Run it (device tool `run`), carry [".whl", ".devdata"], timeout_s 560:

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; set -o pipefail; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py $OUT --device cuda 2>&1 | tee $OUT/gpu_check.log

A rerun at once, while the machine is warm, of the sections that failed (fixes in between):
  the same line with `--only SECTION[,SECTION] --budget-s 150` and timeout_s 200.
EOF
