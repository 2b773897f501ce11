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
class RewardConfig(CheckedConfig):
    """How a discriminator logit becomes a reward.

    ``logit``: the raw logit; ``prob``: D = sigmoid(logit); ``log_prob``: log D (saturates when the
    discriminator is confident, the original GAN generator loss); ``gail``: -log(1 - D), non-saturating,
    as in GAIL. ``clip`` bounds the result; ``normalize`` standardises it per batch or with running
    statistics shared by all processes. ``length_coef`` makes the reward length-aware: it subtracts
    ``length_coef x |log((1 + words generated) / (1 + words of the real response for the same row))|``
    after all of that, so a policy cannot buy reward by drifting in length, a cue the discriminator may
    learn first.
    """

    form: Literal["logit", "prob", "log_prob", "gail"] = "logit"
    clip: list[float] | None = None
    normalize: Literal["none", "batch", "running"] = "none"
    # Momentum of the running mean/variance (``normalize: running``).
    running_momentum: float = 0.99
    length_coef: float = 0.0

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

    kind: Literal["head", "classifier", "adapter"] = "head"
    # Condition on the prompt (prompt + response) or read the response alone.
    conditional: bool = True
    max_length: int = 256

    # --- head (KIND_FIELDS: a classifier rejects them, except mark_end and cache_size, read by both) ---
    # "generator": the generator's frozen reference weights (no second LLM in memory); or a checkpoint.
    encoder: str = "generator"
    # Which hidden layer of the encoder the head reads (-1: the last, after the final norm).
    encoder_layer: int = -1
    d_model: int = 256
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    lstm: bool = False
    lstm_hidden: int = 256
    # Append the end-of-sequence token to every response that ended on its own (real ones; generations not
    # cut at max_completion_length), so the discriminator sees the cut and a policy cannot win by running
    # into the length limit with text that never ends. Off: the response text alone.
    mark_end: bool = False
    # Features of real responses (hidden states, or a classifier's token ids) are cached; at most this many.
    cache_size: int = 4096
    # Pairs per forward of the frozen encoder (head). Chunks are padded to a multiple of 32 tokens, so a
    # pair's features are the same bits whatever pairs shared its chunk (verified on CPU): cached, replayed
    # and restored features match, and a resumed run is the uninterrupted one. 1 reads each pair alone
    # (slower; the same bits).
    encode_batch_size: int = 32

    # --- classifier (a head rejects model and lora; gguf_file and trust_remote_code apply to both) ---
    # A sequence-classification checkpoint (num_labels=1 is set), or "generator" for the generator's own.
    model: str | None = None
    # A GGUF file inside ``model`` (classifier) or ``encoder`` (head) when that checkpoint is one.
    gguf_file: str | None = None
    # LoRA on a classifier (none: full fine-tuning), or the adapter of kind ``adapter`` (none: these
    # defaults, r 8, alpha 16, every linear layer).
    lora: ClassifierLoraSettings | None = None
    trust_remote_code: bool = False

    # --- training rounds ---
    # ``bce``: real and generated samples each labelled (the GAN loss). ``bradley_terry``: each generation
    # paired with a real response to the same prompt, -log sigmoid(D(real) - D(generated)), as GAD
    # (arXiv 2511.10643); accuracies are then the share of pairs ranked right.
    loss: Literal["bce", "bradley_terry"] = "bce"
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 32
    # Optimizer steps per round; a round runs every ``update_every`` policy updates with fresh samples.
    updates_per_round: int = 4
    update_every: int = 1
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    # Past generations kept for replay (0: none) and the share of each generated batch drawn from them.
    replay_size: int = 0
    replay_fraction: float = 0.5
    # Distinct real pairs kept for the rounds to draw from (real data does not go stale); 0: only the
    # real responses of the current step's prompts.
    real_pool_size: int = 1024
    # The guard against a discriminator that wins: before each round, its accuracy on the fresh samples
    # (real and generated, before any update) is measured; above this it skips the round's updates, so
    # the policy can catch up while the reward still carries signal. 1.0 turns the guard off.
    max_accuracy: float = 0.9
    # Before the first policy update: sample this many responses from the initial policy (per process)
    # and train on them for ``warmup_updates`` steps.
    warmup_samples: int = 64
    warmup_updates: int = 20
    seed: int = 0

    reward: RewardConfig = field(default_factory=RewardConfig)

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field (``field: expected ..., got ...``); also run by
        :meth:`gan_rl.trainer.adversary.Adversary.build`, for a config changed after construction.

        Types first (:class:`CheckedConfig`): nested sections given as mappings (from Python, or a config
        saved as JSON) become their classes there, and a ``batch_size="32"`` or ``True`` is refused by
        name before any rule compares it.
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
