"""On the GPU machine: rebuild sft-best (the converged SFT model of benchmarks/smollm2_twon_converged.py)
from the bundled SmolLM2 GGUF and sft-best's best LoRA checkpoint, merged in bfloat16 as gan-rl sft merges
it; compare every tensor with the CPU-built sft-best (hashes carried in hashes.json)."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

g, here, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
from gan_rl.utils.modeling import gguf_load_kwargs  # noqa: E402

base = AutoModelForCausalLM.from_pretrained(str(g), **gguf_load_kwargs("SmolLM2-135M-Instruct.Q4_1.gguf"))
base = base.to(torch.bfloat16)
merged = PeftModel.from_pretrained(base, str(g / "adapter")).merge_and_unload()
merged.save_pretrained(out)
for f in (g / "tok").iterdir():
    shutil.copy(f, out / f.name)
expected = json.loads((here / "hashes.json").read_text())
from safetensors.torch import load_file  # noqa: E402

got = load_file(str(out / "model.safetensors"))
same = sum(
    hashlib.sha256(got[k].float().numpy().tobytes()).hexdigest() == v for k, v in expected.items() if k in got
)
print(
    f"sft-best rebuilt: {same}/{len(expected)} tensors bit-identical to the CPU build; keys here {len(got)}"
)
