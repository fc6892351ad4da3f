#!/usr/bin/env bash
# Install ssl_toolkit into ./.venv (created if missing).
#   --dev   also the test tools (pytest, ruff)
#   --data  also make sure Fashion-MNIST is on disk: Debian's dataset-fashion-mnist where apt works,
#           torchvision's download into ./data otherwise
#   --gpu   faiss-gpu instead of faiss-cpu (never both: they overwrite each other's files)
# Always with the gen extra (diffusers, transformers) for `ssl-toolkit generate-views` and the shards extra
# (webdataset, datasets) for tar shards and Hugging Face datasets.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0 data=0 faiss=cpu
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --data) data=1 ;;
    --gpu) faiss=gpu ;;
    *) echo "install.sh: unknown option $arg (accepted: --dev --data --gpu)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extras=$faiss,gen,shards
[ "$dev" = 1 ] && extras="$extras,dev"
echo "installing ssl-toolkit[$extras] into .venv (torch and its CUDA libraries take a few minutes)"
.venv/bin/python -m pip install --quiet --progress-bar off -e ".[$extras]"

if [ "$data" = 1 ]; then
  have_data() { [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
    || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte ] || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte.gz ]; }
  if ! have_data && command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo -n"
    { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
      || echo "apt-get could not install dataset-fashion-mnist; downloading with torchvision instead"
  fi
  if ! have_data; then
    .venv/bin/python -c "from ssl_toolkit.data import FashionMNIST; FashionMNIST('train', download=True); FashionMNIST('test', download=True)"
  fi
  echo "Fashion-MNIST is on disk"
fi
