"""Ship model weights to the device machine under its 64 MiB-per-call limit: every float matrix
as int8 in groups of 128 along its last axis (fp16 scale per group, error <= scale/2), the
rest fp16. `pack SRC_DIR OUT_FILE` here, `unpack PACKED OUT_DIR SRC_FILES_DIR` there."""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GROUP = 128


def pack(src: Path, out: Path) -> None:
    tensors = load_file(str(src / "model.safetensors"))
    packed = {}
    for name, t in tensors.items():
        t = t.float()
        if t.ndim == 2 and t.shape[-1] % GROUP == 0 and t.numel() >= 65536:
            g = t.reshape(t.shape[0], -1, GROUP)
            scale = (g.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-12)
            q = torch.round(g / scale).clamp(-127, 127).to(torch.int8)
            packed[name + ".q"] = q.reshape(t.shape).contiguous()
            packed[name + ".s"] = scale.squeeze(-1).half().contiguous()
        else:
            packed[name + ".h"] = t.half().contiguous()
    save_file(packed, str(out))


def unpack(packed_file: Path, out: Path) -> None:
    packed = load_file(str(packed_file))
    tensors = {}
    for key, t in packed.items():
        name, kind = key.rsplit(".", 1)
        if kind == "h":
            tensors[name] = t.float()
        elif kind == "q":
            scale = packed[name + ".s"].float().unsqueeze(-1)
            g = t.float().reshape(t.shape[0], -1, GROUP) * scale
            tensors[name] = g.reshape(t.shape).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
