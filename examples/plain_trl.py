"""gan-rl with TRL's own trainer, from Python: the discriminator's judgement is GRPO's reward.

    python examples/plain_trl.py                                   # SmolLM2-135M-Instruct from the hub
    python examples/plain_trl.py DIR --gguf-file NAME.gguf         # a local (GGUF) checkpoint
    python examples/plain_trl.py --data posts.jsonl --prompt-column topic --response-column post

Data: any datasets-readable file with a prompt and a real response per row (default: 256 rows of the
quickstart task). The example is docs/python-api.md's, and tests/trainer/test_plain_trl.py runs it.
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset, load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from gan_rl import (
    AdversarialGRPOTrainer,
    Adversary,
    DiscriminatorConfig,
    RealResponseLoss,
    adversarial_dataset,
)
from gan_rl.cli.synthetic import quickstart_rows
from gan_rl.trainer.dataset import real_pairs
from gan_rl.utils.modeling import gguf_load_kwargs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--gguf-file", default=None, help="a .gguf file inside MODEL")
    p.add_argument(
        "--data", default=None, help="a .jsonl / .csv / .parquet file (default: the quickstart rows)"
    )
    p.add_argument("--prompt-column", default="topic")
    p.add_argument("--response-column", default="post")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--output-dir", default="outputs/plain-trl")
    args = p.parse_args(argv)

    # 1. The generator and the data: a prompt and a real response per row.
    # A GGUF file is dequantized at load into an ordinary trainable model (gguf_load_kwargs: {} otherwise).
    model = AutoModelForCausalLM.from_pretrained(args.model, **gguf_load_kwargs(args.gguf_file))
    tokenizer = AutoTokenizer.from_pretrained(args.model, gguf_file=args.gguf_file)
    if args.data:
        builder = {"jsonl": "json"}.get(args.data.rsplit(".", 1)[-1], args.data.rsplit(".", 1)[-1])
        rows = load_dataset(builder, data_files=args.data, split="train")
    else:
        rows = Dataset.from_list(quickstart_rows(256, seed=0))
    train = adversarial_dataset(
        rows, tokenizer, prompt_column=args.prompt_column, response_column=args.response_column
    )

    # 2. The adversary: a discriminator reading the generator's own frozen hidden states, its reward and
    # the callback that retrains it between policy updates.
    adversary = Adversary.build(DiscriminatorConfig(loss="bradley_terry"), model, tokenizer, real=train)

    # 3. TRL's GRPO, rewarded by the discriminator, with InstructGPT's SFT term on the real responses.
    trainer = AdversarialGRPOTrainer(
        model=model,
        reward_funcs=[adversary.reward],
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
        callbacks=[adversary.callback],
        real_response_loss=RealResponseLoss(tokenizer, real_pairs(train), coef=0.1),
    )
    adversary.attach(trainer)  # before train(): binds the encoder, the logging and the sampling settings
    trainer.train()  # resume: trainer.train(resume_from_checkpoint=True) restores the discriminator too
    trainer.save_model(args.output_dir)
    print(f"rounds: {adversary.disc_trainer.rounds}, last: {adversary.disc_trainer.last_stats}")


if __name__ == "__main__":
    main()
