#!/usr/bin/env bash
# Prepare, on a machine with registry access, what bench/gpu_check.sh needs on a GPU machine without one (the
# lent H200: Python 3.12, torch 2.11 with CUDA 13 and most of cram's needs already installed):
#   .whl/              py3.12 x86-64 wheels of what that image lacks for pretrain, glue, convert and bench:
#                      pydantic and its parts (the image's list: /work/.library/device/KINDS.md);
#   .gpu-carry/data    a prepared-data folder for the 24 budget (cram's tokenizer, 32768 words, rows of 128) from a
#                      local corpus (default: 1500 articles of the shared Wikipedia sample);
#   .gpu-carry/glue    the GLUE RTE and STS-B TSV folders.
# Both folders are git-ignored; name them in the device run's `carry`. Then it checks that the wheels install
# for Python 3.12 on manylinux x86-64 (pip's --dry-run: nothing is installed here).
# Usage: bash bench/gpu_carry.sh [--corpus PATH] [--glue DIR] [--max-documents N]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# the shared folder beside the main checkout (also from a git worktree of it)
SHARED=$(cd "$(git rev-parse --git-common-dir)/.." && pwd)/../shared
CORPUS=$SHARED/data/corpus/enwiki-2015-sample
GLUE=$SHARED/data/glue
DOCS=1500
while (($#)); do
  case $1 in
    --corpus) CORPUS=$2; shift ;;
    --glue) GLUE=$2; shift ;;
    --max-documents) DOCS=$2; shift ;;
    *) echo "gpu_carry: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 1. wheels: pinned to versions cram is tested with; --no-deps, so every needed one is named
WHEELS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        typing-extensions==4.15.0)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
# the install line gpu_check.sh runs there, checked here for Python 3.12 without installing anything
"$PYTHON" -m pip install --dry-run --ignore-installed --no-index --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" --target /tmp/cram-site-dry-run .whl/*.whl
echo "wheels: $(ls .whl | tr '\n' ' ')"

# 2. prepared data for the 24 budget
mkdir -p .gpu-carry
if [[ ! -f .gpu-carry/data/manifest.json ]]; then
  "$PYTHON" -m cramcli train-tokenizer --budget 24 --source "$CORPUS" --max-documents "$DOCS" \
    --out .gpu-carry/tokenizer --quiet
  "$PYTHON" -m cramcli prepare-data --budget 24 --source "$CORPUS" --max-documents "$DOCS" \
    --tokenizer .gpu-carry/tokenizer/tokenizer.json --out .gpu-carry/data --quiet
  rm -rf .gpu-carry/tokenizer  # the prepared folder keeps its own copy
fi

# 3. GLUE RTE and STS-B as the original TSVs
for task in RTE STS-B; do
  [[ -f $GLUE/$task/train.tsv ]] || { echo "gpu_carry: no $GLUE/$task/train.tsv (pass --glue DIR)" >&2; exit 2; }
  mkdir -p ".gpu-carry/glue/$task"
  cp "$GLUE/$task/train.tsv" "$GLUE/$task/dev.tsv" ".gpu-carry/glue/$task/"
done
du -sh .whl .gpu-carry
echo "carry: [\".whl\", \".gpu-carry\"]; command: bash bench/gpu_check.sh --out \$OUT"
