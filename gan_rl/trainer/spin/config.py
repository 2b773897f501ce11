"""``SpinConfig``: the settings of :class:`gan_rl.trainer.spin.trainer.SpinTrainer` (SPIN self-play).

A subclass of TRL's ``DPOConfig``: every iteration of SPIN *is* a DPO run (real response = chosen, the
policy's own sample = rejected), so ``beta``, ``loss_type``, ``learning_rate``, ``max_steps`` /
``num_train_epochs``, ``save_steps``, ... are TRL's own fields and mean what they mean there, counted per
iteration (each iteration is a fresh DPO run: its own optimizer, schedule and ``global_step``). The fields
added here say how many iterations to play and how the rejected side is sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import DPOConfig

from gan_rl.errors import ConfigError
from gan_rl.trainer.trl_internals import dict_fields

# How the rejected side is chosen among an iteration's own samples (SpinConfig.rejected_by).
REJECTED_BY = ("sample", "discriminator")
# TRL 1.16's DPO loss types (DPOConfig.loss_type's help). Checked at construction: TRL itself only rejects
# an unknown one at the first training step, which for SPIN comes after a whole round of sampling.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@dataclass
class SpinConfig(DPOConfig):
    """Settings of SPIN (arXiv 2401.01335) and its snapshot variant (SODA, arXiv 2604.03873).

    ``iterations`` rounds of: sample the current policy on the train prompts, pair every real response
    (chosen) with ``samples_per_prompt`` own samples for the same prompt (rejected), train TRL's DPO on
    those pairs against the policy as it was at the start of the round. The TrainingArguments that bound a
    run (``max_steps``, ``num_train_epochs``) and the checkpoints (``save_steps``) apply to each
    iteration; ``output_dir`` holds one ``iteration-k/`` folder per iteration.
    """

    # chat_template_kwargs given as a JSON string (a command line) becomes a dict, as TRL's dict fields do.
    _VALID_DICT_FIELDS = dict_fields(DPOConfig, "chat_template_kwargs")

    iterations: int = field(
        default=3,
        metadata={
            "help": "Number of SPIN iterations (rounds of sampling then DPO training). Each iteration's "
            "reference model is the policy at its start; SPIN reports most of the gain in the first 2-3."
        },
    )
    samples_per_prompt: int = field(
        default=1,
        metadata={
            "help": "Own samples drawn per train row (prompt and real response). Each sample makes its own "
            "preference pair with the row's real response as chosen, so an iteration trains on "
            "rows x samples_per_prompt pairs (SPIN uses 1)."
        },
    )
    rejected_by: str = field(
        default="sample",
        metadata={
            "help": "Which own samples are the rejected side: 'sample', each of the samples_per_prompt "
            "samples makes a pair (SPIN); 'discriminator', one per prompt, the sample the recipe's "
            "discriminator (trained on this iteration's samples against the real responses, "
            "cross-fitted) scores least real. 'discriminator' needs samples_per_prompt >= 2."
        },
    )
    snapshot: bool = field(
        default=False,
        metadata={
            "help": "SODA's variant: the rejected samples are drawn once, from the starting model, in "
            "iteration 1, and every later iteration reuses them (its reference is still the previous "
            "iterate). Saves the sampling of every iteration after the first."
        },
    )
    prompts_per_iteration: int | None = field(
        default=None,
        metadata={
            "help": "Train rows sampled (and trained on) per iteration: None for all of them, else a random "
            "subset of this many rows, drawn afresh each iteration from the seed (with snapshot: drawn once, "
            "in iteration 1). Bounds the sampling cost when max_steps would not use every row anyway."
        },
    )
    max_completion_length: int = field(
        default=256,
        metadata={"help": "Maximum number of new tokens of each own sample (generate's max_new_tokens)."},
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature of the own samples. 1.0 samples the policy's own distribution, "
            "the one SPIN's game is about."
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling of the own samples (1.0: off)."},
    )
    top_k: int = field(
        default=0,
        metadata={"help": "Top-k sampling of the own samples (0: off; transformers' own default is 50)."},
    )
    generation_batch_size: int = field(
        default=32,
        metadata={
            "help": "Prompts per generate call when sampling the rejected side (batched, left-padded)."
        },
    )
    chat_template_kwargs: dict | None = field(
        default=None,
        metadata={
            "help": "Extra keyword arguments of the chat template (e.g. {'enable_thinking': False}), used "
            "both to sample and by TRL to tokenize the pairs."
        },
    )
    # SPIN computes the reference log-probabilities once per iteration, with the policy at its start (no
    # second model in memory), and saves them beside the pairs so that a resumed iteration reuses them.
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Must stay True: the reference (the policy at the start of the iteration) is scored "
            "once, before the iteration trains, and saved in iteration-k/ for resume."
        },
    )

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ValueError as exc:
            raise ConfigError(type(self).__name__, str(exc)) from None
        super().__post_init__()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field (``field: expected ..., got ...``)."""
        checks = [
            ("iterations", _is_int(self.iterations) and self.iterations >= 1, "an integer >= 1"),
            (
                "samples_per_prompt",
                _is_int(self.samples_per_prompt) and self.samples_per_prompt >= 1,
                "an integer >= 1",
            ),
            (
                "rejected_by",
                self.rejected_by in REJECTED_BY,
                " or ".join(repr(v) for v in REJECTED_BY),
            ),
            (
                "prompts_per_iteration",
                self.prompts_per_iteration is None
                or (_is_int(self.prompts_per_iteration) and self.prompts_per_iteration >= 1),
                "None (every row) or an integer >= 1",
            ),
            (
                "max_completion_length",
                _is_int(self.max_completion_length) and self.max_completion_length >= 1,
                "an integer >= 1",
            ),
            ("temperature", _finite(self.temperature) and self.temperature > 0, "a finite number > 0"),
            ("top_p", _finite(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("top_k", _is_int(self.top_k) and self.top_k >= 0, "an integer >= 0 (0: off)"),
            (
                "generation_batch_size",
                _is_int(self.generation_batch_size) and self.generation_batch_size >= 1,
                "an integer >= 1",
            ),
            ("beta", _finite(self.beta) and self.beta > 0, "a finite number > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}.")
        if self.rejected_by == "discriminator" and self.samples_per_prompt < 2:
            raise ValueError(
                "samples_per_prompt: rejected_by 'discriminator' picks one of several samples per prompt; "
                f"expected an integer >= 2, got {self.samples_per_prompt!r}."
            )
        loss_types = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        unknown = [t for t in loss_types if t not in DPO_LOSS_TYPES]
        if not loss_types or unknown:
            raise ValueError(
                f"loss_type: {unknown or loss_types!r} is not valid; valid: {', '.join(DPO_LOSS_TYPES)}."
            )
        if not self.precompute_ref_log_probs:
            raise ValueError(
                "precompute_ref_log_probs: expected True (SPIN scores its reference, the policy at the start "
                "of each iteration, once before training and keeps no second model), got False."
            )
        eval_strategy = getattr(self.eval_strategy, "value", self.eval_strategy)
        if eval_strategy != "no":
            raise ValueError(
                f"eval_strategy: expected 'no' (SpinTrainer takes no evaluation set: each iteration's pairs "
                f"are built from the train rows), got {eval_strategy!r}."
            )
        if self.sync_ref_model:
            raise ValueError(
                "sync_ref_model: expected False (SPIN's reference is fixed within an iteration and moves to "
                "the new policy between iterations), got True."
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
