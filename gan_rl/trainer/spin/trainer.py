"""SPIN self-play fine-tuning (arXiv 2401.01335) on TRL's ``DPOTrainer``, and its snapshot variant (SODA).

SPIN makes the discriminator implicit: the policy's log-ratio against its previous iterate,
``beta * (log p_theta(y|x) - log p_ref(y|x))``, is trained with the DPO loss to rank the real response of a
prompt above the policy's own sample for it. At its fixed point the policy's samples cannot be told from
the real responses by that ratio, i.e. the policy has matched the data distribution. Each iteration is an
ordinary DPO run on freshly built pairs, so there is no policy-gradient variance, and sampling happens
once per iteration in large batches.

The loop (:meth:`SpinTrainer.train`), for each iteration k:

1. the starting policy: the initial model (k = 1), or iteration k - 1's final policy loaded from disk;
2. the pairs: the starting policy sampled on the train prompts (or, with ``snapshot``, iteration 1's
   samples reused), every real response (chosen) against its own prompt's samples (rejected), written to
   ``iteration-k/pairs.jsonl`` and read back; with ``rejected_by: discriminator`` only the sample an
   explicit discriminator scores least real (:mod:`gan_rl.trainer.spin.rejection`);
3. DPO: TRL's ``DPOTrainer`` with ``ref_model=None`` and ``precompute_ref_log_probs=True``, which scores
   the pairs with its reference *before any step* (in ``DPOTrainer.__init__``) and keeps no second model.
   Full fine-tuning: the reference is the model it is given, the starting policy. LoRA: the starting
   policy is the base with iteration k - 1's adapter, which TRL copies into a frozen ``ref`` adapter that
   scores the reference (iteration 1: a fresh adapter, and the reference the base with it disabled).
   Either way the reference is the previous iterate, exactly. The scores are saved to
   ``iteration-k/reference_logps.safetensors``;
4. the final policy saved to ``iteration-k/model`` (with LoRA: the adapter only; the base never changes),
   then ``iteration.json``: the iteration is done.

LoRA keeps one adapter trained across all iterations, merged into the weights only once, at the end
(:attr:`SpinTrainer.model`): merging each iteration's update into the weights instead would round it to
the weights' dtype every iteration, and in bfloat16 an update smaller than half a unit in the last place
is lost.

Every iteration after the first starts from the policy it loads from disk and trains on the pairs it reads
from disk, in the uninterrupted run as in a resumed one, and the sampling RNG is seeded from (``seed``,
k): so a run resumed anywhere (between iterations, or mid-iteration from TRL's checkpoint with the saved
pairs and reference log-probabilities) ends with the same weights, bit for bit, as one that was never
stopped. The layout on disk is :mod:`gan_rl.trainer.spin.layout`'s.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, Features, Value, concatenate_datasets
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedModel, TrainerCallback, set_seed
from trl import DPOTrainer

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.trainer.spin.config import SpinConfig
from gan_rl.trainer.spin.layout import IterationSummary, RunLayout
from gan_rl.trainer.spin.pairs import (
    PreferencePair,
    build_pairs,
    check_prompt_completion,
    iteration_rows,
    preference_dataset,
    read_pairs,
    sample_rejected,
    write_pairs,
)
from gan_rl.trainer.spin.rejection import check_rejection_discriminator, pick_rejected
from gan_rl.trainer.trl_internals import ReferenceLogpsHookMixin
from gan_rl.utils.library_internals import attn_implementation
from gan_rl.utils.modeling import free_memory, load_model_as_trl

logger = logging.getLogger(__name__)

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# The adapter SPIN trains (peft's and TRL's default name); TRL adds its frozen copy as "ref".
ADAPTER = "default"


def sampling_seed(seed: int, iteration: int) -> int:
    """The seed of iteration ``iteration``'s sampling (and row subset): a function of the run's seed and
    the iteration only, so that a resumed run samples what the uninterrupted one did, and two seeds'
    runs never share a sampling stream (``seed + k`` would give seed 1's first iteration seed 0's second)."""
    return (seed * 1_000_003 + iteration) % 2**32


@dataclass
class SpinOutput:
    """What :meth:`SpinTrainer.train` did: one summary per done iteration (those a resumed run skipped
    included, read from disk), the optimizer steps of all of them, and whether a callback or
    :attr:`SpinTrainer.stop_requested` stopped the run before its last iteration was done."""

    iterations: list[IterationSummary] = field(default_factory=list)
    global_step: int = 0
    stopped: bool = False


class ReferenceStoreDPOTrainer(ReferenceLogpsHookMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` whose precomputed reference log-probabilities of the train pairs are saved to
    ``reference_file``, and read from it instead of computed when it is there (a resumed iteration).

    TRL computes them in ``__init__`` with the model it is given (``ref_model=None``), before any step, and
    caches them only in a temporary file. A hook around that private method
    (:class:`gan_rl.trainer.trl_internals.ReferenceLogpsHookMixin`) keeps them with the run;
    tests/spin/test_spin.py (the resume and reference tests) fails when TRL changes it.
    """

    def __init__(self, *args: Any, reference_file: Path, **kwargs: Any) -> None:
        self.reference_file = Path(reference_file)
        self.reference_reused = False  # read from reference_file, not computed
        super().__init__(*args, **kwargs)

    def precomputed_reference(self, dataset: Dataset, name: str, compute: Callable[[], Dataset]) -> Dataset:
        """The pairs with their reference log-probabilities: read from ``reference_file`` for the train
        pairs when it holds them, else computed by TRL (``compute``) and saved there."""
        if name != "train":
            return compute()
        if self.reference_file.is_file():
            saved = load_file(str(self.reference_file))
            if all(len(saved[c]) == len(dataset) for c in REFERENCE_COLUMNS):
                self.reference_reused = True
                columns = Dataset.from_dict(
                    {c: saved[c].tolist() for c in REFERENCE_COLUMNS},
                    features=Features({c: Value("float32") for c in REFERENCE_COLUMNS}),
                )
                return concatenate_datasets([dataset, columns], axis=1)
            logger.warning(
                "%s does not match the %d pairs: scoring them again.", self.reference_file, len(dataset)
            )
        scored = compute()
        if self.accelerator.is_main_process:
            tensors = {c: torch.tensor(scored[c], dtype=torch.float32) for c in REFERENCE_COLUMNS}
            tmp = self.reference_file.with_name(self.reference_file.name + ".tmp")
            save_file(tensors, str(tmp))
            tmp.replace(self.reference_file)
        self.accelerator.wait_for_everyone()
        return scored


class SpinTrainer:
    """SPIN self-play on TRL's ``DPOTrainer``, built like a TRL trainer::

        trainer = SpinTrainer(model, args=SpinConfig(output_dir="out", iterations=3), train_dataset=ds,
                              processing_class=tokenizer)
        trainer.train()            # or train(resume_from_checkpoint=True) after a stop
        trainer.save_model()       # the final policy (LoRA merged) and the tokenizer in output_dir

    ``model``: a causal LM or its id/path (loaded with ``args.model_init_kwargs``, TRL's float32 default).
    ``train_dataset``: TRL's prompt-completion format (``prompt``, ``completion``: the real response), plain
    or conversational, as for ``SFTTrainer``. ``peft_config``: LoRA, one adapter trained through all the
    iterations (the base never changes), merged into :attr:`model` at the end. ``callbacks`` go to every
    iteration's ``DPOTrainer``; one that stops training early (a preemption) stops the run with that
    iteration not done. A callback of one iteration only (selection by samples, which writes into
    ``iteration-k/``) is added by :attr:`prepare_iteration`, called with (k, that iteration's
    ``DPOTrainer``) before it trains. With full fine-tuning a model object is trained in place in iteration
    1, as TRL does; with LoRA its modules get the adapter layers, merged at the end. ``discriminator``: a
    :class:`~gan_rl.discriminator.config.DiscriminatorConfig`, required by ``args.rejected_by
    == "discriminator"`` (it picks each prompt's rejected sample; kinds ``head`` and ``classifier``).
    """

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: SpinConfig | None = None,
        train_dataset: Dataset | None = None,
        processing_class: Any = None,
        peft_config: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        discriminator: DiscriminatorConfig | None = None,
    ) -> None:
        model_id = model if isinstance(model, str) else model.config.name_or_path
        if args is None:
            args = SpinConfig(output_dir=f"{str(model_id).rstrip('/').split('/')[-1]}-SPIN")
        if not isinstance(args, SpinConfig):
            raise TypeError(f"SpinTrainer: args must be a SpinConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("SpinTrainer: train_dataset is required (columns 'prompt' and 'completion').")
        self.conversational = check_prompt_completion(train_dataset)
        if _is_peft(model):
            raise ValueError(
                "SpinTrainer: pass the base model and a peft_config, not a PeftModel (merge_and_unload() an "
                "adapter you start from)."
            )
        quantized = not isinstance(model, str) and (
            getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        )
        if quantized or "quantization_config" in (args.model_init_kwargs or {}):
            raise ValueError(
                "SpinTrainer: a quantized model is not supported (the final policy merges the adapter into "
                "its weights)."
            )
        if args.rejected_by == "discriminator":
            if discriminator is None:
                raise ValueError(
                    "SpinTrainer: args.rejected_by 'discriminator' needs discriminator= (a "
                    "DiscriminatorConfig: the explicit discriminator that picks the rejected samples)."
                )
            check_rejection_discriminator(discriminator)
        self.args = args
        self.discriminator = discriminator
        self.train_dataset = train_dataset
        self.peft_config = peft_config
        self.callbacks = list(callbacks or [])
        self._initial = model
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(
                model_id, trust_remote_code=args.trust_remote_code
            )
        if processing_class.pad_token is None:  # as DPOTrainer does; sampling pads too
            processing_class.pad_token = processing_class.eos_token
        self.processing_class = processing_class
        self.layout = RunLayout(args.output_dir)
        # The policy: the initial model (None while it is an id not loaded yet), the final one after train().
        self.model: PreTrainedModel | None = None if isinstance(model, str) else model
        # The current (last) iteration's DPOTrainer, for callers that read its state (a preemption's step).
        self.trainer: DPOTrainer | None = None
        # Asked before each iteration (its sampling included): True ends the run there, not done.
        self.stop_requested: Callable[[], bool] | None = None
        # Called with (k, iteration k's DPOTrainer) once it is built, before it trains: for what belongs to
        # one iteration (a callback writing into iteration-k/, like selection by samples, whose step count
        # restarts with each DPO run) or needs the trainer (attach, backend checks).
        self.prepare_iteration: Callable[[int, DPOTrainer], None] | None = None
        # LoRA: the last iteration's PeftModel, whose base the next iteration reuses.
        self._previous_peft: Any = None

    # -- the loop -----------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: bool | str | None = None) -> SpinOutput:
        """Play the iterations not done yet (see the module docstring).

        ``resume_from_checkpoint``: None/False for a fresh run (refused where ``output_dir`` already holds
        iterations), True to continue the run on disk (done iterations skipped, the first other one from
        its latest checkpoint), or the path of a checkpoint inside that iteration's folder.
        """
        args, layout = self.args, self.layout
        first, checkpoint = layout.resume_point(resume_from_checkpoint)
        output = SpinOutput(
            iterations=[layout.read_summary(k) for k in range(1, min(first, args.iterations + 1))]
        )
        policy = None
        for k in range(first, args.iterations + 1):
            if self.stop_requested is not None and self.stop_requested():
                output.stopped = True
                break
            start = time.time()
            model = self._starting_model(k)
            pairs, rows, reused = self._pairs(k, model)
            sampled = time.time()

            self.trainer = trainer = self._dpo_trainer(k, model, pairs)
            if self.prepare_iteration is not None:
                self.prepare_iteration(k, trainer)
            trainer.train(resume_from_checkpoint=checkpoint if k == first else None)
            trained = time.time()
            if trainer.state.global_step < trainer.state.max_steps:  # a callback stopped it: not done
                output.stopped = True
                break

            policy = self._save_iteration(k, trainer)
            summary = _iteration_summary(
                k, trainer, rows, len(pairs), reused, (start, sampled, trained, time.time()),
                checkpoint if k == first else None,
            )  # fmt: skip
            if layout.rejection_file(k).is_file():
                summary.rejection = json.loads(layout.rejection_file(k).read_text())
            if args.should_save:
                layout.write_summary(summary)
            PartialState().wait_for_everyone()
            output.iterations.append(summary)
            logger.info(
                "SPIN iteration %d/%d: %d pairs, %d steps, sampling %.1fs, training %.1fs",
                k, args.iterations, len(pairs), summary.steps,
                summary.sampling_seconds, summary.training_seconds,
            )  # fmt: skip
            # The next iteration loads its start from disk: drop this one's trainer and weights first.
            del model
            if k < args.iterations:
                del trainer
                self.trainer, self.model, policy = None, None, None
                free_memory()
        output.global_step = sum(s.steps for s in output.iterations)
        if policy is None and not output.stopped and layout.is_done(args.iterations):
            policy = self._policy_after(args.iterations)  # every iteration was already done
        if policy is not None:
            self._previous_peft = None
            self.model = _merged(policy)
        return output

    # -- each step of an iteration ------------------------------------------------------------------

    def _starting_model(self, k: int) -> PreTrainedModel:
        """The policy at the start of iteration k, to sample from and train."""
        return self._policy_after(k - 1, trainable=True)

    def _policy_after(self, k: int, trainable: bool = False) -> PreTrainedModel:
        """The policy at the end of iteration k (k = 0: the initial model). Full fine-tuning: the model
        saved in ``iteration-k/model``; LoRA: the base with that folder's adapter (a PeftModel)."""
        if self.peft_config is None:
            if k > 0:
                return self._load(self.layout.model_dir(k))
            return (
                self._load(self._initial, revision=True) if isinstance(self._initial, str) else self._initial
            )
        base = self._lora_base()
        if k == 0:
            return base  # TRL adds the fresh adapter (peft_config)
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(self.layout.model_dir(k)), is_trainable=trainable)

    def _lora_base(self) -> PreTrainedModel:
        """The unchanged base weights under LoRA: loaded again from the initial id, else the initial model
        object with the previous iteration's adapters taken out (``unload``, not merged) and TRL's patch of
        its ``forward`` (``add_fused_lm_head``, an instance attribute the next DPOTrainer sets again)
        removed: the same module a resumed run starts from. Were TRL to patch otherwise, the pop does
        nothing and the patches nest, computing the same."""
        previous, self._previous_peft = self._previous_peft, None
        if isinstance(self._initial, str):
            del previous
            free_memory()
            return self._load(self._initial, revision=True)
        base = previous.unload() if previous is not None else self._initial
        vars(base).pop("forward", None)
        from peft.tuners.tuners_utils import BaseTunerLayer

        if any(isinstance(m, BaseTunerLayer) for m in base.modules()):
            raise ValueError(
                "SpinTrainer: the model already carries adapter layers (wrapped by an earlier trainer in "
                "this process); pass a freshly loaded model."
            )
        return base

    def _pairs(self, k: int, model: PreTrainedModel) -> tuple[list[PreferencePair], int, bool]:
        """Iteration k's pairs (read back from ``pairs.jsonl``, written first unless a stopped run had
        written it), the number of train rows they cover, and whether the samples were iteration 1's.

        With ``rejected_by: discriminator`` the samples go to ``samples.jsonl`` first, and every process
        then ranks them (:func:`gan_rl.trainer.spin.rejection.pick_rejected`, a collective) before the main
        process writes the kept ones: whether to rank is decided before anyone can write ``pairs.jsonl``."""
        args, layout, path = self.args, self.layout, self.layout.pairs_file(k)
        reused = args.snapshot and k > 1
        ranked = args.rejected_by == "discriminator" and not reused and not path.is_file()
        with args.main_process_first(local=False, desc=f"SPIN iteration {k}: sampling"):
            if not path.is_file():  # the main process writes it; the others then find it
                if reused:
                    write_pairs(path, read_pairs(layout.pairs_file(1)))
                elif not ranked:
                    write_pairs(path, self._sample_pairs(k, model))
                elif not layout.samples_file(k).is_file():  # a resumed run ranks the saved samples again
                    write_pairs(layout.samples_file(k), self._sample_pairs(k, model))
        if ranked:
            self._rank_samples(k, model)
        pairs = read_pairs(path)
        return pairs, len({p.row for p in pairs}), reused

    def _rank_samples(self, k: int, model: PreTrainedModel) -> None:
        """``pairs.jsonl`` from ``samples.jsonl``: per prompt the sample the explicit discriminator, trained
        afresh on this iteration's samples (cross-fitted, seeded by the run's seed and k), scores least
        real; how it ranked them in ``rejection.json``. Every process ranks; the main process writes."""
        layout = self.layout
        candidates = read_pairs(layout.samples_file(k))
        kept, stats = pick_rejected(
            candidates, self.args.samples_per_prompt, self.discriminator, model, self.processing_class,
            sampling_seed(self.args.seed, k),
        )  # fmt: skip
        if self.args.should_save:
            tmp = layout.rejection_file(k).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(stats), indent=2))
            tmp.replace(layout.rejection_file(k))
            write_pairs(layout.pairs_file(k), kept)
        PartialState().wait_for_everyone()
        logger.info(
            "SPIN iteration %d: the discriminator kept 1 of %d samples per prompt (held-out accuracy %.3f; "
            "%.1f words kept, %.1f on average)", k, self.args.samples_per_prompt, stats.heldout_accuracy,
            stats.mean_kept_words, stats.mean_words,
        )  # fmt: skip

    def _sample_pairs(self, k: int, model: PreTrainedModel) -> list[PreferencePair]:
        args = self.args
        seed = sampling_seed(args.seed, k)
        rows = iteration_rows(len(self.train_dataset), args.prompts_per_iteration, seed)
        prompts = [self.train_dataset[r]["prompt"] for r in rows]
        if getattr(model, "hf_device_map", None) is None:
            model.to(args.device)
        set_seed(seed)
        samples = sample_rejected(model, self.processing_class, prompts, args.samples_per_prompt, args)
        return build_pairs(self.train_dataset, rows, samples, args.samples_per_prompt)

    def _dpo_trainer(self, k: int, model: PreTrainedModel, pairs: list[PreferencePair]) -> DPOTrainer:
        """TRL's DPOTrainer for iteration k, writing into ``iteration-k/``, with ``ref_model=None`` and
        precomputed reference log-probabilities: the reference is ``model`` as it is now (LoRA: TRL's
        frozen copy of its adapter, or the base with a fresh adapter disabled), scored before any step."""
        iteration_args = copy.copy(self.args)
        iteration_args.output_dir = str(self.layout.iteration_dir(k))
        return ReferenceStoreDPOTrainer(
            model=model,
            ref_model=None,
            args=iteration_args,
            train_dataset=preference_dataset(pairs, self.args.chat_template_kwargs),
            processing_class=self.processing_class,
            # A PeftModel (iteration k > 1 under LoRA) goes on training its adapter.
            peft_config=None if _is_peft(model) else self.peft_config,
            callbacks=self.callbacks,
            reference_file=self.layout.reference_file(k),
        )

    def _save_iteration(self, k: int, trainer: DPOTrainer) -> PreTrainedModel:
        """Iteration k's final policy in ``iteration-k/model`` (LoRA: its adapter, without TRL's ``ref``
        copy) with the tokenizer, and its log history in ``iteration-k/trainer_state.json``."""
        out = self.layout.model_dir(k)
        policy = trainer.accelerator.unwrap_model(trainer.model)
        if _is_peft(policy):
            if self.args.should_save:
                policy.save_pretrained(str(out), selected_adapters=[ADAPTER])
                self.processing_class.save_pretrained(str(out))
            self._previous_peft = policy  # its base, unloaded, is the next iteration's
        else:
            trainer.save_model(str(out))  # gathers sharded weights where TRL's own save does
        trainer.save_state()
        PartialState().wait_for_everyone()
        return policy

    def _load(self, path: str | Path, revision: bool = False) -> PreTrainedModel:
        """A model as TRL's DPOTrainer loads one: from ``model_init_kwargs`` when the initial model was an
        id, else with the initial model's dtype and attention (as TRL builds a reference for a model passed
        as an instance). ``revision`` applies to the initial id only, not to the iterations' folders."""
        if isinstance(self._initial, str):
            kwargs = dict(self.args.model_init_kwargs or {})
        else:
            kwargs = {
                "dtype": self._initial.dtype,
                "attn_implementation": attn_implementation(self._initial.config),
            }
        if not revision:
            kwargs.pop("revision", None)
        return load_model_as_trl(str(path), self.args, kwargs)

    # -- results --------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | Path | None = None) -> None:
        """The final policy (LoRA already merged) and the tokenizer in ``output_dir`` (default
        ``args.output_dir``): an ordinary checkpoint, as ``gan-rl sft`` leaves one."""
        if self.model is None:
            raise ValueError("SpinTrainer.save_model: no policy yet; call train() first.")
        out = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            self.model.save_pretrained(str(out))
            self.processing_class.save_pretrained(str(out))
        PartialState().wait_for_everyone()

    @property
    def log_history(self) -> list[dict[str, Any]]:
        """Every done iteration's DPO log history, in order, each entry with its ``iteration`` and a
        ``step`` counted over the whole run (``iteration_step``: within its iteration), for curves."""
        history, offset = [], 0
        for k in range(1, self.layout.last_done() + 1):
            for entry in self.layout.log_history(k):
                step = int(entry.get("step", 0))
                history.append({**entry, "iteration": k, "iteration_step": step, "step": offset + step})
            offset += self.layout.read_summary(k).steps
        return history


def _iteration_summary(
    k: int,
    trainer: Any,
    rows: int,
    pairs: int,
    reused: bool,
    times: tuple[float, float, float, float],
    resumed_from: Any,
) -> IterationSummary:
    """What iteration ``k`` did, from its DPO trainer's state; ``times``: when it started, finished
    sampling, finished training and finished saving."""
    start, sampled, trained, saved = times
    return IterationSummary(
        iteration=k,
        rows=rows,
        pairs=pairs,
        steps=trainer.state.global_step,
        reused_samples=reused,
        train_loss=_last(trainer.state.log_history, "train_loss"),
        metrics=_last_metrics(trainer.state.log_history),
        sampling_seconds=round(sampled - start, 3),
        training_seconds=round(trained - sampled, 3),
        saving_seconds=round(saved - trained, 3),
        resumed_from=resumed_from,
    )


def _last(log_history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in log_history if key in h]
    return float(values[-1]) if values else None


def _last_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged training entry's DPO metrics (rewards/*, logps/*, loss, ...)."""
    logged = [h for h in log_history if "loss" in h]
    if not logged:
        return {}
    return {
        k: float(v)
        for k, v in logged[-1].items()
        if isinstance(v, (int, float)) and k not in ("step", "epoch")
    }


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def _merged(policy: PreTrainedModel) -> PreTrainedModel:
    """The policy as an ordinary model: LoRA's trained adapter merged into the base (TRL's ``ref`` copy
    dropped), or the model itself."""
    return policy.merge_and_unload(adapter_names=[ADAPTER]) if _is_peft(policy) else policy
