"""``GumbelConfig``: the settings of :class:`gan_rl.gumbel.trainer.GumbelTrainer` (the recipe's
``trainer`` and ``gumbel`` sections build it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers import TrainingArguments

from gan_rl.errors import ConfigError
from gan_rl.utils.fields import FieldError, check_fields
from gan_rl.utils.training_values import training_value_problem


@dataclass
class GumbelConfig(TrainingArguments):
    """Settings of ``gan-rl gumbel``: transformers' ``TrainingArguments`` plus the relaxed generation.

    ``per_device_train_batch_size`` counts completions, as in TRL's GRPO/RLOO: it holds
    ``per_device_train_batch_size / num_generations`` prompts, each sampled ``num_generations`` times.
    The fields shared with TRL's configs (``max_completion_length``, ``num_generations``, ``temperature``,
    ``beta``, ``chat_template_kwargs``) mean what they mean there, so one ``trainer:`` section serves all
    three commands.
    """

    max_completion_length: int = 64
    num_generations: int = 1
    # Sampling temperature of the hard samples: the Gumbel-max sample of logits / temperature.
    temperature: float = 1.0
    # Gumbel-softmax temperature: tau_start, moved geometrically to tau_end over tau_steps policy steps
    # (tau_steps 0: tau_start throughout). Low tau: nearly one-hot vectors, high-variance gradients.
    tau_start: float = 1.0
    tau_end: float = 1.0
    tau_steps: int = 0
    # Hard one-hot vectors in the forward pass, the soft vectors' gradient (straight-through estimator).
    straight_through: bool = False
    # ``non_saturating``: -log D(G(x)) = softplus(-logit). ``reward``: minus the discriminator's reward
    # form (discriminator.reward.form, with its clip; its normalisation does not apply).
    loss: Literal["non_saturating", "reward"] = "non_saturating"
    # KL(policy || reference) per generated token, on the same relaxed inputs.
    beta: float = 0.0
    # Bonus for the mean entropy of the generator's next-token distribution (against collapse).
    entropy_coef: float = 0.0
    chat_template_kwargs: dict[str, Any] | None = None
    # Rows keep their text columns (prompt, prompt_text, real_response): the collator passes them on.
    remove_unused_columns: bool = False
    logging_steps: float = 10
    # Trainer's NaN filter would hide a non-finite loss; compute_loss stops the run instead.
    logging_nan_inf_filter: bool = False

    def __post_init__(self) -> None:
        """Refuse a bad field at construction, as a :class:`gan_rl.errors.ConfigError` naming it: this
        class's own fields against their type hints, the values transformers or torch would refuse only
        once training starts (:mod:`gan_rl.utils.training_values`), then the relaxed generation's own
        rules; transformers checks the rest of ``TrainingArguments`` itself."""
        try:
            check_fields(self, names=list(GumbelConfig.__annotations__))
        except FieldError as exc:
            raise ConfigError(type(self).__name__, str(exc)) from None
        problem = training_value_problem(vars(self)) or self._gumbel_problem()
        if problem is not None:
            raise ConfigError(type(self).__name__, f"{problem[0]}: {problem[1]}")
        super().__post_init__()

    def _gumbel_problem(self) -> tuple[str, str] | None:
        """(field, what would be valid) for the first bad setting of the relaxed generation, else None."""
        checks = [
            ("tau_start", self.tau_start > 0, "positive"),
            ("tau_end", self.tau_end > 0, "positive"),
            ("tau_steps", self.tau_steps >= 0, "0 (constant) or positive"),
            ("beta", self.beta >= 0, "0 (off) or positive"),
            ("entropy_coef", self.entropy_coef >= 0, "0 (off) or positive"),
        ]
        for name, ok, expected in checks:
            if not ok:
                return name, f"expected {expected}, got {getattr(self, name)!r}."
        if self.per_device_train_batch_size % self.num_generations:
            return (
                "per_device_train_batch_size",
                f"{self.per_device_train_batch_size} completions do not split into groups of "
                f"num_generations={self.num_generations}; use a multiple of it.",
            )
        return None

    def tau(self, step: int) -> float:
        """The Gumbel-softmax temperature at policy step ``step`` (geometric from start to end)."""
        if self.tau_steps == 0:
            return self.tau_start
        frac = min(step / self.tau_steps, 1.0)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac
