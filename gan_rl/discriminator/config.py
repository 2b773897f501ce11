"""Configuration of the discriminator, its training rounds and the reward it gives.

Kept apart from ``discriminator.py`` (as TRL keeps ``GRPOConfig`` beside ``GRPOTrainer``) so that a
recipe can be validated without importing torch models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

from gan_rl.utils.fields import CheckedConfig
from gan_rl.utils.lora import ClassifierLoraSettings


@dataclass
class DiscriminatorRewardConfig(CheckedConfig):
    """How a discriminator logit becomes a reward.

    ``logit``: the raw logit; ``prob``: D = sigmoid(logit); ``log_prob``: log D (saturates when the
    discriminator is confident, the original GAN generator loss); ``gail``: -log(1 - D), non-saturating,
    as in GAIL. ``clip`` bounds the result; ``normalize`` standardises it per batch or with running
    statistics shared by all processes. ``length_coef`` makes the reward length-aware: it subtracts
    ``length_coef x |log((1 + words generated) / (1 + words of the real response for the same row))|``
    after all of that, so a policy cannot buy reward by drifting in length, a cue the discriminator may
    learn first.
    """

    form: Literal["logit", "prob", "log_prob", "gail"] = field(
        default="logit", metadata={"help": "logit, prob (sigmoid), log_prob (log D) or gail (-log(1 - D))."}
    )
    clip: list[float] | None = field(
        default=None, metadata={"help": "[low, high] bounds of the reward, or none."}
    )
    normalize: Literal["none", "batch", "running"] = field(
        default="none",
        metadata={"help": "none, batch (per batch) or running (statistics shared by all processes)."},
    )
    running_momentum: float = field(
        default=0.99, metadata={"help": "Momentum of the running mean/variance (``normalize: running``)."}
    )
    length_coef: float = field(
        default=0.0,
        metadata={"help": "Subtract this x |log((1 + words generated) / (1 + words of the real response))|."},
    )

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field (``field: expected ..., got ...``): its type
        (``form: 'bogus' is not a valid choice``) first, then its range."""
        super().validate()
        if self.clip is not None and not all(math.isfinite(float(v)) for v in self.clip):
            raise ValueError(f"clip: expected two finite numbers [low, high], got {self.clip}.")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] >= self.clip[1]):
            raise ValueError(f"clip: expected [low, high] with low < high, got {self.clip}.")
        if not 0.0 <= self.running_momentum < 1.0:
            raise ValueError(f"running_momentum: expected a value in [0, 1), got {self.running_momentum}.")
        if not (math.isfinite(float(self.length_coef)) and self.length_coef >= 0):
            raise ValueError(f"length_coef: expected a finite number >= 0, got {self.length_coef}.")


KINDS = ("head", "classifier", "adapter")
# The fields only some kinds read (every other field applies to all of them).
KIND_FIELDS = {
    "head": (
        "encoder",
        "encoder_layer",
        "d_model",
        "num_layers",
        "num_heads",
        "dropout",
        "lstm",
        "lstm_hidden",
        "encode_batch_size",
    ),
    "classifier": ("model", "lora"),
    "adapter": ("lora",),
}


@dataclass
class DiscriminatorConfig(CheckedConfig):
    """The adversary: what it is, how it reads a (prompt, response) pair, and how it is trained.

    ``kind: head`` is the original design: a frozen encoder LM (by default the generator's own reference
    weights) gives hidden states, and a small Transformer encoder (+ optional LSTM) + linear layer gives
    one logit. ``kind: classifier`` is a separate sequence-classification model with its own tokenizer.
    ``kind: adapter`` is GAD's critic without a second model: a LoRA adapter of its own on the generator's
    base weights (beside the policy's, PEFT multi-adapter) and a linear score head on the last token's
    final hidden state; as strong as the generator, and trained through it.
    """

    kind: Literal["head", "classifier", "adapter"] = field(
        default="head",
        metadata={
            "help": "head (a small Transformer on a frozen LM's states), classifier (a model of its own) or adapter (a LoRA adapter on the generator's base)."
        },
    )
    conditional: bool = field(
        default=True,
        metadata={"help": "Condition on the prompt (prompt + response) or read the response alone."},
    )
    max_length: int = field(
        default=256,
        metadata={
            "help": "Tokens of one (prompt, response) pair the discriminator reads; a long prompt keeps its last half of them."
        },
    )

    # --- head (KIND_FIELDS: a classifier rejects them, except mark_end and cache_size, read by both) ---
    encoder: str = field(
        default="generator",
        metadata={
            "help": "'generator': the generator's frozen reference weights (no second LLM in memory); or a checkpoint."
        },
    )
    encoder_layer: int = field(
        default=-1,
        metadata={
            "help": "Which hidden layer of the encoder the head reads (-1: the last, after the final norm)."
        },
    )
    d_model: int = field(
        default=256, metadata={"help": "Width of the head's Transformer encoder (kind head)."}
    )
    num_layers: int = field(
        default=2, metadata={"help": "Layers of the head's Transformer encoder (kind head)."}
    )
    num_heads: int = field(
        default=4, metadata={"help": "Attention heads of the head's Transformer encoder (kind head)."}
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the head (kind head)."})
    lstm: bool = field(
        default=False,
        metadata={
            "help": "An LSTM after the head's Transformer encoder, as the original experiment's option (kind head)."
        },
    )
    lstm_hidden: int = field(default=256, metadata={"help": "Hidden size of that LSTM (kind head)."})
    mark_end: bool = field(
        default=False,
        metadata={
            "help": "Append the end-of-sequence token to every response that ended on its own (real ones; generations not cut at max_completion_length), so the discriminator sees the cut and a policy cannot win by running into the length limit with text that never ends. Off: the response text alone."
        },
    )
    cache_size: int = field(
        default=4096,
        metadata={
            "help": "Features of real responses (hidden states, or a classifier's token ids) are cached; at most this many."
        },
    )
    encode_batch_size: int = field(
        default=32,
        metadata={
            "help": "Pairs per forward of the frozen encoder (head). Chunks are padded to a multiple of 32 tokens, so a pair's features are the same bits whatever pairs shared its chunk (verified on CPU): cached, replayed and restored features match, and a resumed run is the uninterrupted one. 1 reads each pair alone (slower; the same bits)."
        },
    )

    # --- classifier (a head rejects model and lora; gguf_file and trust_remote_code apply to both) ---
    model: str | None = field(
        default=None,
        metadata={
            "help": "A sequence-classification checkpoint (num_labels=1 is set), or 'generator' for the generator's own."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A GGUF file inside ``model`` (classifier) or ``encoder`` (head) when that checkpoint is one."
        },
    )
    lora: ClassifierLoraSettings | None = field(
        default=None,
        metadata={
            "help": "LoRA on a classifier (none: full fine-tuning), or the adapter of kind ``adapter`` (none: these defaults, r 8, alpha 16, every linear layer)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run a checkpoint's own modelling code (off unless asked for)."}
    )

    # --- training rounds ---
    loss: Literal["bce", "bradley_terry"] = field(
        default="bce",
        metadata={
            "help": "``bce``: real and generated samples each labelled (the GAN loss). ``bradley_terry``: each generation paired with a real response to the same prompt, -log sigmoid(D(real) - D(generated)), as GAD (arXiv 2511.10643); accuracies are then the share of pairs ranked right."
        },
    )
    learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate of the discriminator's trainable part."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the discriminator."})
    batch_size: int = field(default=32, metadata={"help": "Pairs per discriminator optimizer step."})
    updates_per_round: int = field(
        default=4,
        metadata={
            "help": "Optimizer steps per round; a round runs every ``update_every`` policy updates with fresh samples."
        },
    )
    update_every: int = field(default=1, metadata={"help": "A round every this many policy updates."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Targets 1 - s for real and s for generated pairs (bce)."}
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Gradient clipping of the discriminator's steps."}
    )
    replay_size: int = field(default=0, metadata={"help": "Past generations kept for replay (0: none)."})
    replay_fraction: float = field(
        default=0.5,
        metadata={"help": "The share of each generated batch drawn from the replayed past generations."},
    )
    real_pool_size: int = field(
        default=1024,
        metadata={
            "help": "Distinct real pairs kept for the rounds to draw from (real data does not go stale); 0: only the real responses of the current step's prompts."
        },
    )
    max_accuracy: float = field(
        default=0.9,
        metadata={
            "help": "The guard against a discriminator that wins: before each round, its accuracy on the fresh samples (real and generated, before any update) is measured; above this it skips the round's updates, so the policy can catch up while the reward still carries signal. 1.0 turns the guard off."
        },
    )
    warmup_samples: int = field(
        default=64,
        metadata={
            "help": "Before the first policy update: sample this many responses from the initial policy (per process) and train on them for ``warmup_updates`` steps."
        },
    )
    warmup_updates: int = field(
        default=20, metadata={"help": "Optimizer steps of the warm-up on the initial policy's samples."}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the discriminator's initialisation, its sampling of pairs and its buffer."
        },
    )

    reward: DiscriminatorRewardConfig = field(
        default_factory=DiscriminatorRewardConfig,
        metadata={
            "help": "How a logit becomes a reward (DiscriminatorRewardConfig; a mapping of its fields is accepted)."
        },
    )

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field (``field: expected ..., got ...``); also run by
        :meth:`gan_rl.trainer.adversary.Adversary.build`, for a config changed after construction.

        Types first (:class:`CheckedConfig`): nested sections given as mappings (from Python, or a config
        saved as JSON) become their classes there, and a ``batch_size="32"`` or ``True`` is refused by
        name before any rule compares it.

        Long on purpose: one flat list of rules in field order, which reads as the config's contract; split
        up, each rule would be looked for in several places.
        """
        super().validate()
        try:
            self.reward.validate()
        except ValueError as exc:
            raise ValueError(f"reward.{exc}") from None
        checks = [
            ("max_length", self.max_length >= 8, "at least 8"),
            ("num_heads", self.num_heads > 0, "positive"),
            (
                "d_model",
                self.d_model > 0 and self.d_model % max(self.num_heads, 1) == 0,
                "a multiple of num_heads",
            ),
            ("num_layers", self.num_layers >= 0, "0 or more"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("lstm_hidden", self.lstm_hidden > 0, "positive"),
            ("cache_size", self.cache_size >= 0, "0 or more"),
            ("encode_batch_size", self.encode_batch_size >= 1, "1 or more"),
            ("learning_rate", math.isfinite(self.learning_rate) and self.learning_rate > 0, "positive"),
            # torch's AdamW refuses a negative one when the optimizer is built, after the models load.
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "0 or more"),
            ("batch_size", self.batch_size > 0, "positive"),
            # 0 would freeze the discriminator (a constant judge) while its buffer grows without bound.
            ("updates_per_round", self.updates_per_round >= 1, "1 or more"),
            ("update_every", self.update_every >= 1, "1 or more"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 0.5, "in [0, 0.5)"),
            ("replay_size", self.replay_size >= 0, "0 or more"),
            ("real_pool_size", self.real_pool_size >= 0, "0 or more"),
            ("replay_fraction", 0.0 <= self.replay_fraction < 1.0, "in [0, 1)"),
            ("max_accuracy", 0.5 < self.max_accuracy <= 1.0, "in (0.5, 1] (1.0: no guard)"),
            ("warmup_samples", self.warmup_samples >= 0, "0 or more"),
            ("warmup_updates", self.warmup_updates >= 0, "0 or more"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}.")
        if self.loss == "bradley_terry" and self.label_smoothing > 0:
            raise ValueError("label_smoothing: applies to loss 'bce' only (bradley_terry compares pairs).")
        if self.kind == "classifier" and self.model is None:
            raise ValueError(
                "model: kind 'classifier' needs a sequence-classification checkpoint "
                "(or 'generator' for the generator's own)."
            )
        if self.gguf_file is not None and self.kind == "adapter":
            raise ValueError(
                "gguf_file: kind 'adapter' reads the generator's own weights (model.gguf_file); remove it."
            )
        if self.gguf_file is not None:
            own = self.model if self.kind == "classifier" else self.encoder
            name = "model" if self.kind == "classifier" else "encoder"
            if own == "generator":
                raise ValueError(
                    f"gguf_file: names a file inside discriminator.{name}, which is 'generator' (the generator "
                    "brings its own model.gguf_file); remove it or point discriminator."
                    f"{name} at the checkpoint holding the file."
                )
            if "/" in self.gguf_file or not self.gguf_file.endswith(".gguf"):
                raise ValueError(f"gguf_file: expected the name of a .gguf file, got {self.gguf_file!r}.")
        self._check_fields_of_kind()

    def _check_fields_of_kind(self) -> None:
        """A field that only other kinds read, set to anything but its default, is an error: the run
        would ignore it silently (a ``d_model`` for a classifier, a ``model`` for a head)."""
        defaults = {f.name: f.default for f in fields(self)}
        for name in dict.fromkeys(n for names in KIND_FIELDS.values() for n in names):
            owners = [kind for kind in KINDS if name in KIND_FIELDS[kind]]
            if self.kind in owners or getattr(self, name) == defaults[name]:
                continue
            hint = " (a head reads its own checkpoint through 'encoder')" if name == "model" else ""
            readers = (
                f"only kind '{owners[0]}' reads it"
                if len(owners) == 1
                else "only kinds " + " and ".join(f"'{k}'" for k in owners) + " read it"
            )
            raise ValueError(
                f"{name}: {readers}, and this discriminator is kind '{self.kind}'{hint}; remove it, or "
                f"set kind: {' or '.join(owners)}."
            )
