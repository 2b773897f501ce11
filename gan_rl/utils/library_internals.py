"""The one place below ``trainer/`` that reaches into transformers', accelerate's or TRL's private names.

Each function wraps one name that is not part of its library's documented API, with the version it was
checked against; when a library moves it, this module (and the tests that exercise it) is what changes.
``tests/test_internals.py`` fails on a private access anywhere else in the package. The trainer-level ones
(TRL's metrics, its sampling cycle, trainer hooks) live in :mod:`gan_rl.trainer.trl_internals`.
"""

from __future__ import annotations

from typing import Any


def hf_deepspeed_config() -> Any | None:
    """The DeepSpeed config transformers holds globally while a ZeRO-3 run builds models, or None.

    transformers 5.x keeps it behind the module-level weak reference ``_hf_deepspeed_config_weak_ref``
    (``transformers.integrations.deepspeed``); ``set_hf_deepspeed_config`` is public, the getter is not.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    return ref() if ref is not None else None


def distributed_backend(accelerator: Any) -> Any:
    """TRL's ``trl.distributed.DistributedBackend`` (TRL 1.16, not in its documented API): which engine
    shards the model (``is_zero3``, ``is_fsdp``) and FSDP v1's ``summon_full_params``, as TRL's own
    trainers use them."""
    from trl.distributed import DistributedBackend

    return DistributedBackend(accelerator)


def has_callback(trainer: Any, callback: Any) -> bool:
    """Whether ``callback`` (the object itself) is among the trainer's callbacks: transformers 5.x keeps
    them in ``trainer.callback_handler.callbacks``, which has no public reader."""
    return any(c is callback for c in trainer.callback_handler.callbacks)


def attn_implementation(config: Any) -> str | None:
    """The attention implementation a transformers model was built with: ``config._attn_implementation``
    (transformers 5.x; the public ``attn_implementation`` argument is not stored under a public name)."""
    return getattr(config, "_attn_implementation", None)


def log_to_backends(trainer: Any, args: Any, state: Any, control: Any, logs: dict[str, float]) -> None:
    """Send ``logs`` to the trainer's ``report_to`` backends (its callbacks' ``on_log``) without
    ``Trainer.log``, which would also flush TRL's averaged metrics early. transformers 5.x has no public way:
    the ``callback_handler`` attribute is undocumented. ``CallbackHandler.on_log`` clears
    ``control.should_log``, which is put back (the step's own log may have set it)."""
    should_log = control.should_log
    trainer.callback_handler.on_log(args, state, control, logs)
    control.should_log = should_log
