"""Selection by samples: keep the checkpoint whose samples are hardest to tell from real responses.

The last checkpoint and the NLL-best one answer other questions than "which model writes most like the
data": on TWON, SFT samples kept getting closer to the real posts long after the validation NLL had turned
(docs/benchmarks.md). :class:`SampleSelectionCallback` measures that directly during training, the same
way for every trainer (TRL's SFT, GRPO, RLOO and DPO trainers, gan-rl's ``GumbelTrainer``, a plain
``transformers.Trainer``), so every arm of a comparison is selected alike:

* every ``eval_steps`` optimizer steps (and at the last step, and before the first unless ``at_start``
  is off) it samples one response for each of a FIXED set of validation prompts, with a fixed seed, from
  the model being trained (under LoRA, with its adapter);
* it scores them with the n-gram two-sample accuracy against those prompts' real responses, the
  ``two_sample_acc_ngram`` of ``gan-rl evaluate`` (:func:`two_sample_ngram`; 0.5 = indistinguishable,
  lower is better);
* the best model so far is saved to ``output_dir/best-by-samples/`` (``save_pretrained``: the adapter
  under LoRA, the tokenizer beside it) with ``selection.json`` (best step and score, the curve, the cost
  of each evaluation); the curve and the cost go to the trainer's log history as ``sample_select/...``
  (``training_curves.png`` draws them, marking the best step).

Sampling happens between two optimizer steps with every random-number generator (torch's CPU and
accelerator generators, Python's, NumPy's) saved before and restored after, so a run with selection ends
with bit-for-bit the weights of the same run without it. Its state is written into every checkpoint
(``checkpoint-N/sample_selection.json``) and read back on resume, so a resumed run selects what the
uninterrupted run selects.

Distributed (``accelerate launch``): every rank samples its share of the prompts (the shares padded to
equal length, so under ZeRO-3 / FSDP every rank runs ``generate`` equally often), the texts are gathered,
the main process scores them and shares the score, and every rank takes part in saving the best model
(``Trainer.save_model``, a collective when the weights are sharded). No rank waits on a step another rank
skips. That needs :meth:`SampleSelectionCallback.attach`; without it the callback runs single-process only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from gan_rl.errors import ConfigError, InputError
from gan_rl.eval.selection_config import SampleSelectionConfig
from gan_rl.utils.backends import sampling_model
from gan_rl.utils.checkpoints import PARTIAL_SUFFIX, checkpoint_dir
from gan_rl.utils.distributed import all_gather_objects, rank, world_size
from gan_rl.utils.generation import sample_completions
from gan_rl.utils.library_internals import has_callback, log_to_backends

logger = logging.getLogger(__name__)

SELECTION_DIR = "best-by-samples"  # output_dir/best-by-samples/: the selected model and SELECTION_FILE
SELECTION_FILE = "selection.json"
STATE_FILE = "sample_selection.json"  # in every checkpoint-N/: the callback's state at that step
# SELECTION_DIR is written under its PARTIAL_SUFFIX name first and renamed when whole: a kill part-way
# never leaves half a model there.
# The best model a checkpoint records, kept aside when a newer best replaces it before the next
# checkpoint: a run resumed from that checkpoint then still finds the weights it selected.
CHECKPOINTED_SUFFIX = ".checkpointed"

PREFIX = "sample_select/"
METRIC = PREFIX + "two_sample_ngram"  # the score of each evaluation (gan_rl/eval/plots.py draws it)
# The settings that change the score of a given model: a resume must keep them (eval_steps and
# at_start only say when to measure).
SCORE_FIELDS = ("prompts", "temperature", "top_p", "max_new_tokens", "batch_size", "folds", "seed")


def two_sample_ngram(
    real: Sequence[str], generated: Sequence[str], folds: int = 5, seed: int = 0, scoring: str = "accuracy"
) -> float:
    """The n-gram two-sample accuracy of ``generated`` against ``real``: exactly the statistic that
    ``gan-rl evaluate`` reports as ``two_sample_acc_ngram`` (TF-IDF word 1-2-grams fitted on both sets,
    a logistic regression under stratified ``folds``-fold cross-validation), so a selection score and an
    evaluation score of the same texts are the same number. 0.5: indistinguishable; lower is better.
    ``scoring``: as :func:`~gan_rl.eval.metrics.two_sample_accuracy` (the selection uses accuracy)."""
    from gan_rl.eval.metrics import ngram_features, two_sample_accuracy

    real_features, generated_features = ngram_features(list(real), list(generated))
    return two_sample_accuracy(real_features, generated_features, folds=folds, seed=seed, scoring=scoring)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Save every global random-number generator and restore it afterwards: torch's CPU generator and
    those of all devices of the accelerator in use, Python's ``random`` and NumPy's legacy one.

    What runs inside (sampling, a fixed seed set for it) then leaves training exactly where it was; the
    trainer's dropout, data order and TRL's own sampling draw the same numbers with or without it.
    """
    accelerator = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
    # CUDA (ROCm too) and XPU keep one generator per device, all forked; on a CPU only its own.
    device_type = (
        accelerator.type if accelerator is not None and accelerator.type in ("cuda", "xpu") else "cuda"
    )
    count = (
        getattr(torch, device_type).device_count()
        if accelerator is not None and accelerator.type == device_type
        else 0
    )
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(range(count)), device_type=device_type):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def fixed_rows(count: int, available: int, seed: int) -> list[int]:
    """The indices of the rows every evaluation samples: ``count`` of ``available`` (all when fewer),
    drawn once with ``seed``, in their original order."""
    if available <= count:
        return list(range(available))
    return sorted(np.random.default_rng(seed).choice(available, size=count, replace=False).tolist())


def _fingerprint(prompts: list[Any], references: list[str], config: SampleSelectionConfig) -> str:
    """What a score depends on besides the weights: the rows and the scoring settings."""
    blob = json.dumps(
        {"prompts": prompts, "references": references, **{k: getattr(config, k) for k in SCORE_FIELDS}},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Written aside and renamed: the file is whole or the previous one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def _held_step(directory: Path) -> int | None:
    """The step whose model ``directory`` holds (its SELECTION_FILE's ``best_step``), or None."""
    try:
        step = json.loads((directory / SELECTION_FILE).read_text()).get("best_step")
    except (OSError, ValueError, AttributeError):
        return None
    return int(step) if isinstance(step, int) else None


def read_selection(output_dir: str | Path) -> dict[str, Any] | None:
    """A run's selection (``best-by-samples/selection.json``: best step and score, curve, cost), or None
    when the run did not select by samples."""
    try:
        return json.loads((Path(output_dir) / SELECTION_DIR / SELECTION_FILE).read_text())
    except (OSError, ValueError):
        return None


class SampleSelectionCallback(TrainerCallback):
    """Scores the trained model's samples on fixed validation prompts and keeps the best checkpoint.

    ``prompts`` are the generator's inputs as the trainer formats them (plain strings or chat messages),
    ``references`` the real responses of the same rows: take them from the validation split, never from
    the test split that the final evaluation reports. ``config.prompts`` of them are drawn once with
    ``config.seed``. Use it as::

        selection = SampleSelectionCallback(SampleSelectionConfig(eval_steps=50), prompts, references)
        trainer = SFTTrainer(..., callbacks=[selection])
        selection.attach(trainer)  # needed under accelerate launch; logging to report_to backends too
        trainer.train()
        selection.summary()  # best_step, best_score, curve, cost, path of best-by-samples/
    """

    def __init__(
        self,
        config: SampleSelectionConfig,
        prompts: Sequence[Any],
        references: Sequence[str],
        tokenizer: Any = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        resume_dir: str | Path | None = None,
    ) -> None:
        if importlib.util.find_spec("sklearn") is None:
            raise ModuleNotFoundError(
                "selection by samples scores with scikit-learn, which is not installed: pip install 'gan-rl[eval]'"
            )
        if not isinstance(config, SampleSelectionConfig):
            raise TypeError(f"config: expected a SampleSelectionConfig, got {type(config).__name__}")
        try:
            config.validate()  # a config changed after construction
        except ValueError as exc:
            raise ConfigError(type(config).__name__, str(exc)) from None
        prompts, references = list(prompts), list(references)
        if len(prompts) != len(references):
            raise ValueError(
                f"SampleSelectionCallback: {len(prompts)} prompts but {len(references)} references (one each)"
            )
        bad = next((r for r in references if not isinstance(r, str) or not r.strip()), None)
        if bad is not None:
            raise ValueError(
                f"SampleSelectionCallback: every reference must be a non-empty text, got {bad!r}"
            )
        if len(prompts) < config.folds:
            raise ValueError(
                f"SampleSelectionCallback: the two-sample test needs at least folds ({config.folds}) validation "
                f"rows, got {len(prompts)}"
            )
        rows = fixed_rows(config.prompts, len(prompts), config.seed)
        if len(rows) < config.prompts:
            logger.info("Selection by samples: %d validation rows, fewer than prompts=%d; using all.",
                        len(rows), config.prompts)  # fmt: skip
        self.config = config
        self.prompts = [prompts[i] for i in rows]
        self.references = [references[i] for i in rows]
        self.tokenizer = tokenizer
        self.chat_template_kwargs = chat_template_kwargs
        # A checkpoint resumed from elsewhere than output_dir/checkpoint-N (as ``resume_from_checkpoint``).
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.fingerprint = _fingerprint(self.prompts, self.references, config)
        self.trainer: Any = None
        # The selection so far: step -> score, and each evaluation's cost.
        self.curve: dict[int, float] = {}
        self.seconds: dict[int, float] = {}
        self.save_seconds: dict[int, float] = {}
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.output_dir: Path | None = None
        # The best step the latest checkpoint records: its weights are kept until a newer checkpoint.
        self._checkpointed_best: int | None = None

    # -- set-up -------------------------------------------------------------------------------------

    def attach(self, trainer: Any) -> SampleSelectionCallback:
        """Sample and save through ``trainer`` (the model as TRL prepares it for generation: ZeRO-3
        weights gathered, FSDP summoned; ``Trainer.save_model`` for the best model) and send the logs to
        its ``report_to`` backends. Adds the callback to the trainer if it is not there yet."""
        self.trainer = trainer
        if not has_callback(trainer, self):
            trainer.add_callback(self)
        if self.chat_template_kwargs is None:
            own = getattr(trainer, "chat_template_kwargs", None) or getattr(
                trainer.args, "chat_template_kwargs", None
            )
            self.chat_template_kwargs = dict(own or {})
        return self

    # -- the measurement ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _policy(self, model: Any) -> Iterator[Any]:
        if self.trainer is None:
            yield model
            return
        with sampling_model(self.trainer) as unwrapped:
            yield unwrapped

    def sample(self, model: Any, tokenizer: Any) -> list[str]:
        """One response per fixed prompt from ``model``, identical settings and seed every time; every
        rank samples its share and gets all texts back in prompt order (a collective). The global random
        generators are left as they were."""
        cfg = self.config
        world, me = world_size(), rank()
        share = self.prompts[me::world]
        padded = share + self.prompts[:1] * (-(-len(self.prompts) // world) - len(share))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        settings = {
            "do_sample": True,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "pad_token_id": pad,
        }
        with preserved_rng():
            torch.manual_seed(cfg.seed)
            with self._policy(model) as policy:
                completions = sample_completions(
                    policy, tokenizer, padded, cfg.batch_size, settings, self.chat_template_kwargs or {}
                )
        texts = [text.strip() for text, _ in completions[: len(share)]]
        out: list[str] = [""] * len(self.prompts)
        for process, theirs in enumerate(all_gather_objects(texts)):
            out[process::world] = theirs
        return out

    def score(self, texts: list[str]) -> float:
        """The two-sample accuracy of ``texts`` against the fixed prompts' real responses, computed by the
        main process and shared, so every rank takes the same decision to save (a collective)."""
        value = None
        if rank() == 0:
            value = two_sample_ngram(self.references, texts, folds=self.config.folds, seed=self.config.seed)
        return float(all_gather_objects(value)[0])

    # -- files --------------------------------------------------------------------------------------

    def _dirs(self) -> tuple[Path, Path, Path]:
        assert self.output_dir is not None
        final = self.output_dir / SELECTION_DIR
        return (
            final,
            final.with_name(SELECTION_DIR + PARTIAL_SUFFIX),
            final.with_name(SELECTION_DIR + CHECKPOINTED_SUFFIX),
        )

    def _save_model(self, directory: Path, model: Any, tokenizer: Any) -> None:
        if self.trainer is not None:  # every rank: a collective when the weights are sharded
            self.trainer.save_model(str(directory), _internal_call=True)  # _internal_call: no push_to_hub
            return
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))

    def _save_best(self, step: int, model: Any, tokenizer: Any) -> None:
        """The model of ``step`` into ``best-by-samples/``: written aside, then renamed into place. The
        best model the latest checkpoint records is moved aside, not deleted, until the next checkpoint."""
        final, staging, checkpointed = self._dirs()
        main = rank() == 0
        if main and staging.exists():
            shutil.rmtree(staging)
        self._save_model(staging, model, tokenizer)
        if not main:
            return
        _write_json(staging / SELECTION_FILE, self.summary(path=final))
        if final.exists():
            held = _held_step(final)
            if held is not None and held == self._checkpointed_best:
                if checkpointed.exists():
                    shutil.rmtree(checkpointed)
                final.rename(checkpointed)
            else:
                shutil.rmtree(final)
        staging.rename(final)

    def _log(self, args: Any, state: Any, control: Any, logs: dict[str, float]) -> None:
        """Into the log history at this step (``training_curves.png`` and the run summary read it) and, with
        a trainer attached, to its callbacks' ``on_log`` (the report_to backends). Not ``trainer.log``:
        TRL's trainers would flush their averaged metrics early there. ``CallbackHandler.on_log`` clears
        ``control.should_log``, which the step's ``on_step_end`` may have just set for the trainer's own log
        of this step (its loss, every ``logging_steps``): it is put back, or that log would be lost."""
        entry = dict(logs)
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        state.log_history.append({**entry, "step": state.global_step})
        if self.trainer is not None:
            log_to_backends(self.trainer, args, state, control, entry)

    def evaluate(self, args: Any, state: Any, control: Any, model: Any, tokenizer: Any) -> float:
        """Sample, score and record the model of the current step; save it when it is the best so far."""
        step = state.global_step
        model = model if model is not None else getattr(self.trainer, "model", None)
        if self.tokenizer is not None:
            tokenizer = self.tokenizer
        elif tokenizer is None:
            tokenizer = getattr(self.trainer, "processing_class", None)
        if model is None or tokenizer is None:
            raise RuntimeError(
                "SampleSelectionCallback: no model or tokenizer to sample with; attach(trainer)"
            )
        start = time.perf_counter()
        texts = self.sample(model, tokenizer)
        score = self.score(texts)
        seconds = time.perf_counter() - start
        self.curve[step], self.seconds[step] = score, round(seconds, 3)
        improved = self.best_score is None or score < self.best_score  # ties: the earlier step
        if improved:
            self.best_step, self.best_score = step, score
            start = time.perf_counter()
            self._save_best(step, model, tokenizer)
            self.save_seconds[step] = round(time.perf_counter() - start, 3)
        elif rank() == 0 and self._dirs()[0].is_dir():
            _write_json(self._dirs()[0] / SELECTION_FILE, self.summary())
        logger.info(
            "Selection by samples at step %d: two-sample accuracy %.4f (best %.4f at step %d), %d samples "
            "in %.1f s.", step, score, self.best_score, self.best_step, len(texts), seconds,
        )  # fmt: skip
        self._log(
            args,
            state,
            control,
            {
                METRIC: score,
                PREFIX + "best_two_sample_ngram": float(self.best_score),
                PREFIX + "best_step": float(self.best_step),
                PREFIX + "seconds": seconds,
                PREFIX + "samples": float(len(texts)),
            },
        )
        return score

    def summary(self, path: Path | None = None) -> dict[str, Any]:
        """What the run summary and ``selection.json`` report: the best step and score, the curve
        ``{step: score}``, the cost of each evaluation (seconds; samples), the settings and where the
        selected model is."""
        final = path if path is not None else (self._dirs()[0] if self.output_dir is not None else None)
        seconds = list(self.seconds.values())
        return {
            "metric": "two_sample_acc_ngram",
            "best_step": self.best_step,
            "best_score": self.best_score,
            "path": str(final) if final is not None and self.best_step is not None else None,
            "curve": {str(k): v for k, v in self.curve.items()},
            "evaluations": len(self.curve),
            "samples_per_evaluation": len(self.prompts),
            "seconds": {str(k): v for k, v in self.seconds.items()},
            "seconds_per_evaluation": round(float(np.mean(seconds)), 3) if seconds else None,
            "seconds_total": round(float(np.sum(seconds)), 3),
            "save_seconds_total": round(float(np.sum(list(self.save_seconds.values()))), 3),
            "settings": asdict(self.config),
            "fingerprint": self.fingerprint,
        }

    # -- checkpoints --------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "settings": {k: getattr(self.config, k) for k in SCORE_FIELDS},
            "curve": {str(k): v for k, v in self.curve.items()},
            "seconds": {str(k): v for k, v in self.seconds.items()},
            "save_seconds": {str(k): v for k, v in self.save_seconds.items()},
            "best_step": self.best_step,
            "best_score": self.best_score,
        }

    def _reset(self) -> None:
        self.curve, self.seconds, self.save_seconds = {}, {}, {}
        self.best_step = self.best_score = None
        self._checkpointed_best = None

    def _restore(self, checkpoint: Path, step: int) -> str | None:
        """Load the state a checkpoint recorded and put its best model in place (main process); a
        problem that must stop the run is returned as its message."""
        file = checkpoint / STATE_FILE
        if not file.is_file():
            logger.warning(
                "%s has no %s: selection by samples starts afresh at step %d (earlier steps are not "
                "candidates).", checkpoint, STATE_FILE, step,
            )  # fmt: skip
            self._reset()
            self._clear_stale()
            return None
        saved = json.loads(file.read_text())
        if saved.get("fingerprint") != self.fingerprint:
            current = {k: getattr(self.config, k) for k in SCORE_FIELDS}
            changed = [f"{k}: {saved['settings'].get(k)!r} -> {v!r}" for k, v in current.items()
                       if saved.get("settings", {}).get(k) != v] or ["the validation prompts or responses"]  # fmt: skip
            return InputError(
                "{resume}: {checkpoint} selected by samples with other settings ({changed}); resume with the "
                "same ones, or start a new run.",
                checkpoint=checkpoint,
                changed="; ".join(changed),
            )
        self.curve = {int(k): float(v) for k, v in saved["curve"].items()}
        self.seconds = {int(k): float(v) for k, v in saved.get("seconds", {}).items()}
        self.save_seconds = {int(k): float(v) for k, v in saved.get("save_seconds", {}).items()}
        self.best_step, self.best_score = saved["best_step"], saved["best_score"]
        self._checkpointed_best = self.best_step
        if rank() != 0:
            return None
        final, staging, checkpointed = self._dirs()
        if staging.exists():
            shutil.rmtree(staging)
        if self.best_step is None:
            self._clear_stale()
        elif _held_step(final) == self.best_step:
            if checkpointed.exists():
                shutil.rmtree(checkpointed)
        elif _held_step(checkpointed) == self.best_step:  # a newer best came after the checkpoint: undone
            if final.exists():
                shutil.rmtree(final)
            checkpointed.rename(final)
        else:
            return InputError(
                "{resume}: {checkpoint} selected the model of step {step}, which {final} no longer holds (it "
                "holds step {held}); resume from a later checkpoint of this run, or start a new run.",
                checkpoint=checkpoint,
                step=self.best_step,
                final=final,
                held=_held_step(final),
            )
        _write_json(final / SELECTION_FILE, self.summary())
        return None

    def _clear_stale(self) -> None:
        """A fresh selection: a best model left in ``output_dir`` by an earlier run is not a candidate."""
        if rank() != 0:
            return
        for directory in self._dirs():
            if directory.exists():
                logger.info("Selection by samples: removing %s, left by an earlier run.", directory)
                shutil.rmtree(directory)

    # -- TrainerCallback hooks ----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.trainer is None and world_size() > 1:
            raise RuntimeError(
                "SampleSelectionCallback under accelerate launch: call attach(trainer) before train(), so "
                "that every process samples and saves together."
            )
        self.output_dir = Path(args.output_dir)
        if state.global_step > 0:
            checkpoint = self.resume_dir or checkpoint_dir(self.output_dir, state.global_step)
            problem = self._restore(Path(checkpoint), state.global_step)
            problem = all_gather_objects(problem)[0]  # the main process's verdict, on every rank
            if problem is not None:
                raise problem
            return
        self._reset()
        self._clear_stale()
        if self.config.at_start:
            self.evaluate(args, state, control, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        step = state.global_step
        due = step % self.config.eval_steps == 0 or step >= state.max_steps
        if due and step not in self.curve:
            self.evaluate(args, state, control, model, processing_class)

    def on_save(self, args, state, control, **kwargs):
        """After the trainer's own files: this step's selection state into the checkpoint. The best model
        it records is in ``best-by-samples/`` now, so an older one kept aside is no longer needed."""
        if rank() == 0:
            checkpoint = checkpoint_dir(args.output_dir, state.global_step)
            if checkpoint.is_dir():
                _write_json(checkpoint / STATE_FILE, self._state())
            if self.output_dir is not None:
                checkpointed = self._dirs()[2]
                if checkpointed.exists():
                    shutil.rmtree(checkpointed)
        self._checkpointed_best = self.best_step

    def on_train_end(self, args, state, control, **kwargs):
        if rank() == 0 and self.output_dir is not None and self._dirs()[0].is_dir():
            _write_json(self._dirs()[0] / SELECTION_FILE, self.summary())
