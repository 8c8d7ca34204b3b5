#!/usr/bin/env bash
# Runs the README's copy-paste commands as written (those that can run on one CPU machine), in a
# scratch folder that holds the inputs they name: crawl/ (WARC + JSONL), dump/, good/bad JSONL.
# Cluster recipes (multi-node, hostfile, Slurm submission) run with --dry-run only.
#   bash scripts/readme_walkthrough.sh [SCRATCH_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/anvil-readme-XXXX)}
export PATH="$ROOT/.venv/bin:$PATH" WANDB_MODE=offline OMP_NUM_THREADS=1
mkdir -p "$WORK" && cd "$WORK"
ln -sfn "$ROOT/configs" configs
run() { echo "+ $*"; "$@" > "log-$(date +%s%N).txt" 2>&1 || { echo "FAILED: $*"; tail -20 "$(ls -t log-* | head -1)"; exit 1; }; }

# inputs the README's examples name
anvil data sample --output dump/ --limit 600 > /dev/null
mkdir -p crawl && cp dump/*.jsonl crawl/
python - <<'PY'
import json
docs = [json.loads(l) for l in open("dump/sample-00000.jsonl")]
with open("good.jsonl", "w") as g, open("bad.jsonl", "w") as b:
    for d in docs[:200]:
        g.write(json.dumps({"text": d["text"]}) + "\n")
        b.write(json.dumps({"text": " ".join(d["text"].split()[::-1])}) + "\n")
PY
mkdir -p snapshot-1 snapshot-2 && head -300 dump/sample-00000.jsonl > snapshot-1/a.jsonl && tail -300 dump/sample-00000.jsonl > snapshot-2/b.jsonl

run anvil data run configs/data/web.yaml input=crawl/ output=clean/ --workers 2
rm -rf clean && run anvil data run configs/data/jsonl.yaml input=dump/ output=clean/
run anvil data train-classifier --positive good.jsonl --negative bad.jsonl --output quality.npz
rm -rf clean && run anvil data run configs/data/jsonl.yaml input=dump/ output=clean/ 'steps=[{classifier: {model: quality.npz, threshold: 0.5}}]'
rm -rf clean && run anvil data run configs/data/jsonl.yaml input=dump/ output=clean/
run anvil data dedup crawl/ --output deduped/ --workers 2 --memory-budget 1GB
run anvil data dedup-eval crawl/ --dedup-output deduped/ --sample 20000
run anvil data dedup snapshot-1/ --output out-1/ --incremental-store dedup-store/
run anvil data dedup snapshot-2/ --output out-2/ --incremental-store dedup-store/
run anvil data run configs/data/web.yaml input=crawl/ output=clean-slurm/ --executor slurm --slurm-partition cpu --dry-run
run anvil tokenizer train clean/ --vocab-size 8000 --output tok/tokenizer.json
run anvil data tokenize clean/ --tokenizer tok/tokenizer.json --output-prefix tokens/web --workers 2
run anvil train configs/train/tiny.yaml data.paths=[tokens/web] data.tokenizer=tok/tokenizer.json model.vocab_size=8064 train.steps=20 run_dir=runs/web
run anvil train configs/train/tiny.yaml train.steps=30
run anvil train configs/train/tiny.yaml train.steps=500 parallel.zero_stage=2 --print-config
run anvil generate --checkpoint runs/tiny --prompt "def main" --max-new-tokens 40
run anvil generate --checkpoint runs/tiny --prompt "The" --temperature 0.8 --top-k 50 --top-p 0.95
run anvil model info configs/models/1.3b.yaml --instantiate
run torchrun --nproc_per_node 2 "$(which anvil)" train configs/train/tiny.yaml run_dir=runs/tiny-dp2 train.steps=10
run anvil plan configs/models/70b.yaml train.precision=bf16 train.micro_batch_size=1 train.global_batch_size=1024 --world-size 64 --device-memory 80GB
run anvil checkpoint info runs/tiny
run anvil checkpoint verify runs/tiny
run anvil checkpoint consolidate runs/tiny --output runs/tiny-weights
run anvil checkpoint convert runs/tiny --output runs/tiny-any/checkpoints/step_00000030 --publish
run anvil checkpoint info runs/tiny-any
run anvil launch --nproc-per-node 4 configs/train/tiny.yaml train.global_batch_size=16 train.steps=4 run_dir=runs/launch
run anvil launch --nnodes 2 --node-rank 0 --master-addr node0 --nproc-per-node 8 configs/train/tiny.yaml train.global_batch_size=64 --dry-run
printf 'node0 slots=8\nnode1 slots=8\n' > hosts.txt
run anvil launch --hostfile hosts.txt configs/train/tiny.yaml train.global_batch_size=64 --dry-run
run anvil launch --slurm --nodes 4 --gpus-per-node 8 --time 12:00:00 --partition gpu --account proj configs/train/tiny.yaml train.global_batch_size=128 --dry-run
run anvil export hf --checkpoint runs/tiny --output hf/tiny --verify
run python -c "from transformers import AutoModelForCausalLM, AutoTokenizer as T; m = AutoModelForCausalLM.from_pretrained('hf/tiny'); t = T.from_pretrained('hf/tiny'); print(t.decode(m.generate(**t('The', return_tensors='pt'), max_new_tokens=20)[0]))"
run anvil eval --checkpoint runs/web --data tokens/web --output eval.json
run anvil sweep plan configs/sweeps/cpu_tiny.yaml --output plan.csv
# Hugging Face round trip: the exported folder is a transformers Llama folder
rm -rf hf/llama && cp -r hf/tiny hf/llama && mkdir -p docs && cp dump/*.jsonl docs/ && cp dump/sample-00000.jsonl docs.jsonl
run anvil import hf --model hf/llama --output runs/cont train.global_batch_size=16 model.seq_len=512
run anvil data tokenize docs/ --tokenizer runs/cont/tokenizer.json --output-prefix tok/docs
run anvil train runs/cont/config.yaml data.paths=[tok/docs] train.steps=1000 train.steps=30  # README: 1000 steps; 30 here
run torchrun --nproc_per_node 2 "$(which anvil)" finetune --model hf/tiny --data docs.jsonl --output ft/ --lora-rank 8 --zero-stage 2 --steps 200 --seq-len 64
# Ray executor on this machine (a local runtime)
rm -rf clean deduped
run anvil data run configs/data/web.yaml input=crawl/ output=clean/ --executor ray
run anvil data dedup crawl/ --output deduped/ --executor ray --retries 3
echo "README walkthrough: every command above ran (scratch: $WORK)"
