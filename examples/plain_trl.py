"""gan-rl from Python: TRL's GRPO whose reward is a discriminator the trainer builds and retrains itself.

    python examples/plain_trl.py                                   # SmolLM2-135M-Instruct, TWON posts
    python examples/plain_trl.py DIR --gguf-file NAME.gguf         # a local (GGUF) checkpoint
    python examples/plain_trl.py --data posts.jsonl --prompt-column topic --response-column post

Data: any file or URL datasets reads, with a prompt and a real response per row (default: the TWON right-camp
posts of the original LLM-Reinforcement-GAN experiment, downloaded once). The example is docs/python-api.md's,
and tests/trainer/test_plain_trl.py runs it.
"""

from __future__ import annotations

import argparse

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
from trl import GRPOConfig

from gan_rl import AdversarialGRPOTrainer, DiscriminatorConfig, adversarial_dataset

TWON = "https://raw.githubusercontent.com/simon-muenker/LLM-Reinforcement-GAN/6d9467c2199094b8a2c6b5b0c65ee70d133e6b73/experiments/twon/data"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--gguf-file", default=None, help="a .gguf file inside MODEL")
    p.add_argument(
        "--data", default=f"{TWON}/right.train.parquet", help="a .jsonl / .csv / .parquet file or URL"
    )
    p.add_argument("--prompt-column", default="annotation")
    p.add_argument("--response-column", default="full_text")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--output-dir", default="outputs/plain-trl")
    args = p.parse_args(argv)

    # 1. The generator and the data: a prompt and a real response per row. (A model id alone is enough
    # when no GGUF file is involved: AdversarialGRPOTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", ...).)
    # A GGUF file is dequantized at load into an ordinary trainable model.
    gguf = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    dequantize = {"quantization_config": GgufConfig(dequantize=True)} if args.gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(args.model, **gguf, **dequantize)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left", **gguf)
    builder = {"jsonl": "json"}.get(args.data.rsplit(".", 1)[-1], args.data.rsplit(".", 1)[-1])
    rows = load_dataset(builder, data_files=args.data, split="train")
    rows = rows.select(range(min(args.rows, len(rows))))
    train = adversarial_dataset(
        rows, tokenizer, prompt_column=args.prompt_column, response_column=args.response_column
    )

    # 2. TRL's GRPO against a discriminator the trainer builds (reading the generator's own frozen hidden
    # states), rewards with and retrains between policy updates; plus InstructGPT's SFT term on the real
    # responses.
    trainer = AdversarialGRPOTrainer(
        model=model,
        args=GRPOConfig(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=32,
            learning_rate=1e-5,
            logging_steps=1,
            save_steps=25,
            report_to="none",
            bf16=torch.cuda.is_available(),  # TRL's default (on) is refused on a CPU
        ),
        train_dataset=train,
        processing_class=tokenizer,
        discriminator=DiscriminatorConfig(loss="bradley_terry"),
        sft_loss_coef=0.1,
    )
    trainer.train()  # resume: trainer.train(resume_from_checkpoint=True) restores the discriminator too
    trainer.save_model(args.output_dir)
    rounds = trainer.adversary.disc_trainer.rounds
    print(f"discriminator rounds: {rounds}, last: {trainer.adversary.disc_trainer.last_stats}")


if __name__ == "__main__":
    main()
