"""TRL's GRPOTrainer and RLOOTrainer that own their adversary, and carry the SFT loss term.

Built like TRL's own trainers, with one more argument, ``discriminator`` (a :class:`DiscriminatorConfig`): the
trainer builds the discriminator, its reward, buffer and callback itself, puts the reward first in
``reward_funcs`` and the callback in ``callbacks``, wires them to itself and exposes them as
``trainer.adversary``::

    trainer = AdversarialGRPOTrainer(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        args=GRPOConfig(...),
        train_dataset=adversarial_dataset(rows, tokenizer, prompt_column="topic", response_column="post"),
        discriminator=DiscriminatorConfig(loss="bradley_terry"),
        sft_loss_coef=0.1,
    )
    trainer.train()

``sft_loss_coef`` (or a ready ``real_response_loss``) adds InstructGPT's pretraining mix: the NLL of real
pairs from the train dataset. Without ``discriminator`` the trainer is TRL's (plus the SFT term and a prompt
order that a resumed run draws as the uninterrupted one did in every epoch,
:mod:`gan_rl.trainer.epoch_sampler`); an adversary built by :meth:`Adversary.build` can also be handed in as
``adversary=``, which is what ``gan-rl``'s commands do. Users of stock ``trl.GRPOTrainer`` wire the same
adversary with :meth:`Adversary.attach`.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer, RLOOTrainer

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.trainer.adversary import Adversary
from gan_rl.trainer.dataset import real_pairs
from gan_rl.trainer.sft_term import RealResponseLoss, RealResponseLossMixin
from gan_rl.trainer.trl_internals import EpochSamplerMixin
from gan_rl.utils.modeling import load_model_as_trl


def load_policy(model_id: str, args: Any) -> tuple[Any, Any]:
    """The model and tokenizer TRL would load for a model id: ``args.model_init_kwargs`` (dtype, revision,
    quantization, ...) and ``trust_remote_code`` as TRL 1.16's GRPO/RLOO trainers read them, the tokenizer
    padded on the left for generation. Loaded here because the adversary needs the model before TRL's
    constructor runs (its reward goes into ``reward_funcs``)."""
    from transformers import AutoTokenizer

    kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    model = load_model_as_trl(model_id, args, kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        model_id,
        revision=kwargs.get("revision"),
        padding_side="left",
        truncation_side="left",
        trust_remote_code=args.trust_remote_code,
    )
    return model, tokenizer


class AdversaryOwnerMixin:
    """The constructor of :class:`AdversarialGRPOTrainer` / :class:`AdversarialRLOOTrainer` (module
    docstring); the rest is TRL's trainer."""

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        discriminator: DiscriminatorConfig | None = None,
        adversary: Adversary | None = None,
        sft_loss_coef: float = 0.0,
        real_response_loss: RealResponseLoss | None = None,
        callbacks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_owner_arguments(
            discriminator, adversary, sft_loss_coef, real_response_loss, args, train_dataset
        )
        if isinstance(model, str) and (discriminator is not None or sft_loss_coef):
            model, loaded_tokenizer = load_policy(model, args)
            processing_class = processing_class if processing_class is not None else loaded_tokenizer
        if (discriminator is not None or sft_loss_coef) and processing_class is None:
            raise ValueError("processing_class: the tokenizer of the model is needed to build the adversary.")
        if discriminator is not None:
            adversary = Adversary.build(discriminator, model, processing_class, real=train_dataset)
        if sft_loss_coef:
            real_response_loss = RealResponseLoss(
                processing_class,
                real_pairs(train_dataset),
                coef=sft_loss_coef,
                seed=args.seed,
                chat_template_kwargs=getattr(args, "chat_template_kwargs", None),
            )
        callbacks = list(callbacks or [])
        if adversary is not None:
            reward_funcs, callbacks = _with_adversary(adversary, reward_funcs, callbacks)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        self.real_response_loss = real_response_loss
        # The adversary the trainer plays against (None: TRL's trainer with the rewards it was given).
        self.adversary = adversary.attach(self) if adversary is not None else None


class AdversarialGRPOTrainer(AdversaryOwnerMixin, EpochSamplerMixin, RealResponseLossMixin, GRPOTrainer):
    """``gan-rl ppo`` (and ``grpo``): GRPOTrainer that owns its adversary, plus the SFT term."""


class AdversarialRLOOTrainer(AdversaryOwnerMixin, EpochSamplerMixin, RealResponseLossMixin, RLOOTrainer):
    """``gan-rl reinforce`` (and ``rloo``): RLOOTrainer that owns its adversary, plus the SFT term."""


def _check_owner_arguments(
    discriminator: DiscriminatorConfig | None,
    adversary: Adversary | None,
    sft_loss_coef: float,
    real_response_loss: RealResponseLoss | None,
    args: Any,
    train_dataset: Any,
) -> None:
    """The owning trainer's own arguments, refused before anything loads: one way each to give the
    adversary and the SFT term, and what building them needs."""
    if discriminator is not None and adversary is not None:
        raise ValueError("pass discriminator= (the trainer builds the adversary) or adversary=, not both.")
    if sft_loss_coef and real_response_loss is not None:
        raise ValueError("pass sft_loss_coef= (built from train_dataset) or real_response_loss=, not both.")
    if discriminator is not None or sft_loss_coef:
        if args is None:
            raise ValueError(
                "args: the trainer's config is needed to build the adversary (TRL's GRPOConfig)."
            )
        if train_dataset is None:
            raise ValueError("train_dataset: the adversary's real pairs come from it (adversarial_dataset).")


def _with_adversary(
    adversary: Adversary, reward_funcs: Any, callbacks: list[Any]
) -> tuple[list[Any], list[Any]]:
    """TRL's reward functions and callbacks with the adversary's reward first and its callback added, each
    once (a user may have passed them already)."""
    if reward_funcs is None:
        funcs = []
    else:
        funcs = list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
    if not any(f is adversary.reward for f in funcs):
        funcs = [adversary.reward, *funcs]
    if not any(c is adversary.callback for c in callbacks):
        callbacks = [*callbacks, adversary.callback]
    return funcs, callbacks
