"""The adversary: the discriminator, its sample buffer and trainer, the reward and the callback, built
together (:meth:`Adversary.build`) and wired into a TRL trainer (:meth:`Adversary.attach`).

:class:`gan_rl.trainer.trainers.AdversarialGRPOTrainer` builds and attaches one itself
(``discriminator=DiscriminatorConfig(...)``). For a stock TRL trainer::

    adv = Adversary.build(DiscriminatorConfig(), model, tokenizer, real=train_dataset)
    trainer = AdversarialGRPOTrainer(model=model, reward_funcs=[adv.reward], callbacks=[adv.callback], ...)
    adv.attach(trainer)
    trainer.train()
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset

from gan_rl.discriminator.adapter import AdapterDiscriminator
from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.encoder import FrozenEncoder, check_encoder_layer, load_checkpoint_encoder
from gan_rl.discriminator.factory import build_discriminator
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import InputError
from gan_rl.trainer.callback import DiscriminatorCallback
from gan_rl.trainer.dataset import real_pairs
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.trl_internals import save_steps_problem
from gan_rl.types import Pair
from gan_rl.utils.backends import is_sharded, prepare_frozen_copy
from gan_rl.utils.generation import end_token_ids
from gan_rl.utils.library_internals import has_callback

logger = logging.getLogger(__name__)


@dataclass
class Adversary:
    """The discriminator's side of the game, built before TRL's trainer exists.

    ``reward`` goes into the trainer's ``reward_funcs``, ``callback`` into its ``callbacks``; then
    :meth:`attach` binds both to the trainer. The reward scores generations and records them in the
    buffer; the callback trains the discriminator on the buffer between policy updates (through
    ``disc_trainer``) and saves it into every checkpoint (restored on resume).
    """

    config: DiscriminatorConfig
    discriminator: Discriminator
    encoder: FrozenEncoder | None  # kind ``head`` only
    buffer: SampleBuffer
    disc_trainer: DiscriminatorTrainer
    reward: DiscriminatorReward
    callback: DiscriminatorCallback
    # The trainer attach() bound (None: not attached yet, and the reward refuses to run).
    trainer: Any = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        config: DiscriminatorConfig,
        model: torch.nn.Module,
        tokenizer: Any,
        real: Dataset | Sequence[Pair] | None = None,
        *,
        encoder_checkpoint: str | None = None,
        classifier_checkpoint: str | None = None,
        device: torch.device | str | None = None,
        resume_dir: str | None = None,
        fresh_discriminator: bool = False,
    ) -> Adversary:
        """The discriminator ``config`` describes, its buffer, trainer, reward and callback.

        - ``model``, ``tokenizer``: the generator (the policy TRL will train) and its tokenizer; kind
          ``head`` with ``encoder: generator`` reads the generator's frozen weights, kind ``adapter`` adds
          its own LoRA adapter to it at :meth:`attach`.
        - ``real``: the real (prompt, response) pairs the discriminator's warm-up samples prompts from: a
          dataset made by :func:`gan_rl.trainer.dataset.adversarial_dataset` (the trainer's own train
          dataset) or a list of :class:`gan_rl.types.Pair`. None or empty: no warm-up.
        - ``encoder_checkpoint`` / ``classifier_checkpoint``: where to load kind ``head``'s own encoder /
          kind ``classifier``'s model from; default: ``config.encoder`` / ``config.model`` (``generator``
          for a classifier: the generator's own checkpoint, ``model.name_or_path``).
        - ``device``: where the discriminator lives; default: the generator's device.
        - ``resume_dir`` / ``fresh_discriminator``: the checkpoint a resumed run restores the
          discriminator from (default: the one the trainer resumes), and whether a checkpoint without one
          may continue with a fresh discriminator.

        A checkpoint that does not load is one :class:`gan_rl.errors.InputError` naming the field.
        """
        config.validate()  # also in __post_init__; a config edited after construction is checked here
        if device is None:
            device = next(model.parameters()).device
        disc, encoder = discriminator_for(
            config, model, tokenizer, encoder_checkpoint, classifier_checkpoint, device
        )
        warmup_prompts = real_pairs(real) if isinstance(real, Dataset) else list(real or [])
        buffer = SampleBuffer(config.replay_size, seed=config.seed, real_pool_size=config.real_pool_size)
        disc_trainer = DiscriminatorTrainer(disc, config)
        reward = DiscriminatorReward(disc, buffer, config.reward, end_token_ids=end_token_ids(tokenizer))
        callback = DiscriminatorCallback(
            disc_trainer,
            buffer,
            reward,
            warmup_prompts=warmup_prompts,
            resume_dir=resume_dir,
            fresh_discriminator=fresh_discriminator,
        )
        adversary = cls(config, disc, encoder, buffer, disc_trainer, reward, callback)
        reward.recording = adversary._not_attached
        callback.require_attached = adversary._not_attached
        return adversary

    def _not_attached(self) -> bool:
        raise RuntimeError(
            "gan_rl: the adversary is not attached to a trainer; call adversary.attach(trainer) after "
            "building the TRL trainer (with adversary.reward in reward_funcs and adversary.callback in "
            "callbacks) and before trainer.train()."
        )

    def attach(self, trainer: Any, reference: Callable[[], torch.nn.Module] | None = None) -> Adversary:
        """Wire the adversary into TRL's trainer (before ``trainer.train()``):

        - kind ``head`` with ``encoder: generator``: the encoder reads the generator's frozen reference
          weights (the policy with its LoRA adapters disabled, TRL's reference model, or else a frozen
          copy: ``reference()`` when given, which must return the initial generator, else a deep copy of
          the trainer's model as it is now, before training);
        - kind ``adapter``: its LoRA adapter goes onto the generator TRL wrapped in PEFT, before TRL's
          optimizer exists;
        - the callback logs into the trainer's metrics and samples with its settings;
        - the reward records training samples only (TRL's own test for "train" versus "eval").

        Returns the adversary. ``adversary.reward`` and ``adversary.callback`` must be the trainer's.
        Attaching it again to the same trainer changes nothing (a trainer that owns its adversary attached
        it in its constructor).
        """
        if self.trainer is trainer:
            return self
        if self.trainer is not None:
            raise ValueError("Adversary.attach: this adversary is attached to another trainer already.")
        if not any(f is self.reward for f in getattr(trainer, "reward_funcs", [self.reward])):
            raise ValueError("Adversary.attach: adversary.reward is not among the trainer's reward_funcs.")
        if not has_callback(trainer, self.callback):
            raise ValueError("Adversary.attach: adversary.callback is not among the trainer's callbacks.")
        if self.encoder is not None and self.config.encoder == "generator":
            how = bind_generator_encoder(self.encoder, trainer, reference)
            logger.info("Discriminator encoder: %s", how)
        if isinstance(self.discriminator, AdapterDiscriminator):
            bind_generator_adapter(self.discriminator, trainer)
            self.disc_trainer.rebuild()  # its optimizer now holds the adapter too
        problem = save_steps_problem(getattr(trainer, "args", None))
        if problem is not None:
            logger.warning(
                "Adversary.attach: save_steps %d %s, or resumes will not repeat the run.",
                int(trainer.args.save_steps),
                problem,
            )
        self.callback.attach(trainer)
        self.callback.require_attached = None
        self.reward.recording = lambda: trainer.model.training
        self.trainer = trainer
        return self


def bind_generator_encoder(
    encoder: FrozenEncoder, trainer: Any, reference: Callable[[], torch.nn.Module] | None = None
) -> str:
    """Point the head's encoder at the generator's frozen reference weights; returns which ones.

    The same weights TRL uses for its reference, reached the way TRL reaches them: the policy with its
    adapters disabled (forwarded through ``trainer.model``, which the trainer wraps when training starts:
    hence a callable), the prepared reference model, or a frozen copy prepared like one. Under ZeRO-3 or
    FSDP (``sharded``) the encoder forwards those prepared modules whole, on every rank in step.
    """
    accelerator = trainer.accelerator
    sharded = is_sharded(accelerator)
    model = accelerator.unwrap_model(trainer.model)
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        encoder.bind(model, disable_adapters=True, runner=lambda: trainer.model, sharded=sharded)
        return "generator with LoRA adapters disabled"
    if getattr(trainer, "ref_model", None) is not None:
        ref = accelerator.unwrap_model(trainer.ref_model)
        encoder.bind(ref, runner=lambda: trainer.ref_model, sharded=sharded)
        return "the trainer's reference model"
    if reference is None:
        if sharded:
            raise ValueError(
                "Adversary.attach: under ZeRO-3 / FSDP a frozen copy of the generator cannot be taken from "
                "the sharded policy; pass reference= (a function that loads the initial generator)."
            )
        initial = copy.deepcopy(model).eval()
        initial.requires_grad_(False)
    else:
        initial = reference()
    prepared = prepare_frozen_copy(initial, accelerator)
    encoder.bind(accelerator.unwrap_model(prepared), runner=lambda: prepared, sharded=sharded)
    return "a frozen copy of the initial generator (no LoRA, beta=0: one extra model in memory)"


def bind_generator_adapter(discriminator: AdapterDiscriminator, trainer: Any) -> None:
    """Put kind ``adapter``'s LoRA adapter on the generator TRL wrapped in PEFT (``model.lora``), before
    TRL creates its optimizer (which then holds the policy's adapter alone)."""
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    if not (hasattr(model, "add_adapter") and hasattr(model, "peft_config")):
        raise InputError(
            "{discriminator}.kind: 'adapter' adds a LoRA adapter beside the generator's own; the generator "
            "needs one too ({generator_lora})."
        )
    if is_sharded(accelerator):
        raise InputError(
            "{discriminator}.kind: 'adapter' reads the generator's weights whole, which ZeRO-3 / FSDP shard; "
            "use kind 'head' (it reads sharded weights) or a DDP / ZeRO-2 launch."
        )
    discriminator.bind(model)


def discriminator_for(
    config: DiscriminatorConfig,
    model: torch.nn.Module,
    tokenizer: Any,
    encoder_checkpoint: str | None,
    classifier_checkpoint: str | None,
    device: torch.device | str,
) -> tuple[Discriminator, FrozenEncoder | None]:
    """The discriminator ``config`` describes for the generator ``model`` and its frozen encoder (kind
    ``head``; None otherwise), with :meth:`Adversary.build`'s checkpoint defaults. A checkpoint that does
    not load is one :class:`gan_rl.errors.InputError` naming the field."""
    if encoder_checkpoint is None and config.kind == "head" and config.encoder != "generator":
        encoder_checkpoint = config.encoder
    if classifier_checkpoint is None and config.kind == "classifier":
        classifier_checkpoint = config.model
        if classifier_checkpoint in (None, "generator"):
            classifier_checkpoint = getattr(model, "name_or_path", None) or model.config.name_or_path
    encoder = None
    try:
        hidden = model.config.get_text_config().hidden_size
        if config.kind == "head" and encoder_checkpoint is None:
            check_encoder_layer(config.encoder_layer, model)
            encoder = FrozenEncoder(tokenizer, hidden, config.encoder_layer, generator_format=True)
        elif config.kind == "head":
            encoder = load_checkpoint_encoder(config, encoder_checkpoint, device)
        disc = build_discriminator(
            config,
            encoder=encoder,
            checkpoint=classifier_checkpoint,
            tokenizer=tokenizer,
            hidden_size=hidden,
            device=device,
        )
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        field_, name = (
            ("encoder", encoder_checkpoint) if config.kind == "head" else ("model", classifier_checkpoint)
        )
        raise InputError(
            "{discriminator}.{field}: cannot load {name!r}: {reason}", field=field_, name=name, reason=exc
        ) from None
    return disc, encoder
