"""PyTorch-on-CUDA latency of run models (issue 16 part 4): median ms of batch 1 and batch 32 at
seq 128, fp32 and bf16, after warm-up, with CUDA events. Prints one JSON line per model."""

import json
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification


def median_ms(model, batch: int, seq: int, repeats: int) -> float:
    ids = torch.randint(1000, 2000, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids, attention_mask=mask)
            end.record()
            torch.cuda.synchronize()
            if i >= 10:
                times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


for path in sys.argv[1:]:
    row = {"model": path, "device": torch.cuda.get_device_name()}
    for dtype in ("fp32", "bf16"):
        model = AutoModelForSequenceClassification.from_pretrained(path).cuda().eval()
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        for batch in (1, 32):
            row[f"{dtype}_b{batch}_ms"] = round(median_ms(model, batch, 128, 200), 3)
        row[f"{dtype}_b32_seq_per_s"] = round(32 / row[f"{dtype}_b32_ms"] * 1000, 1)
    print(json.dumps(row), flush=True)
    time.sleep(0.1)
