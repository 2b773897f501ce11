"""The controls that keep the adversarial game balanced: each one changes what the loop does."""

from __future__ import annotations

import json

import pytest
import torch

from gan_rl.cli.recipe import parse_recipe
from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import RecipeError
from gan_rl.trainer.callback import DiscriminatorCallback
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.sft_term import RealResponseLoss
from tests.conftest import FAKE, REAL, make_head


def weights(disc) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in disc.state_dict().items()}


def changed(before, disc) -> bool:
    return any(not torch.equal(before[k], v) for k, v in disc.state_dict().items())


def fill(buffer, disc, n=16, offset=0):
    gen, real = FAKE[offset : offset + n], REAL[offset : offset + n]
    buffer.add(disc.featurize(gen), disc.featurize(real, cache=True), gen, real)


# -- the "discriminator too strong" guard -----------------------------------------------------------


def test_guard_skips_rounds_while_the_discriminator_wins(generator):
    disc = make_head(generator, max_accuracy=0.8)
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer()
    fill(buffer, disc)
    first = trainer.train_round(buffer, updates=60)  # starts near chance: trains, and learns to win
    assert not first.skipped and first.updates == 60 and trainer.skipped_rounds == 0
    before = weights(disc)
    fill(buffer, disc, offset=16)
    second = trainer.train_round(buffer, updates=5)
    assert second.skipped and second.updates == 0 and second.accuracy > 0.8
    assert trainer.skipped_rounds == 1 and not changed(before, disc)
    assert buffer.fresh_generated == []  # the skipped samples were consumed all the same
    assert second.as_logs()["disc/skipped"] == 1.0


def test_guard_off_trains_every_round(generator):
    disc = make_head(generator, max_accuracy=1.0)
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer()
    for offset in (0, 16):
        fill(buffer, disc, offset=offset)
        before = weights(disc)
        stats = trainer.train_round(buffer, updates=60)
        assert not stats.skipped and changed(before, disc)


def test_guard_threshold_is_validated():
    with pytest.raises(ValueError, match="max_accuracy"):
        DiscriminatorConfig(max_accuracy=0.4).validate()


# -- real pool -------------------------------------------------------------------------------------


def test_real_pool_keeps_distinct_real_pairs_for_later_rounds(generator):
    disc = make_head(generator)
    buffer = SampleBuffer(real_pool_size=20)
    for offset in (0, 8, 0, 16):  # the third batch repeats the first: no duplicates enter
        fill(buffer, disc, n=8, offset=offset)
        buffer.take_fresh()
    assert len(buffer.real_pool) == 20
    assert len({p.key for p in buffer.real_pool_pairs}) == 20
    # A round draws its real half from the pool, not only from this step's 2 real responses.
    fill(buffer, disc, n=2, offset=40)
    generated, real = buffer.take_fresh()
    assert len(real) == 2 and len(buffer.real_for_round(real)) == 20


def test_real_pool_travels_with_the_checkpoint(generator):
    disc = make_head(generator)
    buffer = SampleBuffer(real_pool_size=8)
    fill(buffer, disc, n=12)
    buffer.take_fresh()
    restored = SampleBuffer(real_pool_size=8)
    restored.load_state(json.loads(json.dumps(buffer.state())), disc.featurize)
    assert restored.real_pool_pairs == buffer.real_pool_pairs
    # The pool's index of pairs came back too: a pair it holds does not enter twice.
    held = restored.real_pool_pairs[:4]
    restored.add([], disc.featurize(held, cache=True), [], held)
    restored.take_fresh()
    assert restored.real_pool_pairs == buffer.real_pool_pairs
    assert all(
        torch.equal(a["hidden"], b["hidden"])
        for a, b in zip(restored.real_pool, buffer.real_pool, strict=True)
    )


def test_without_a_pool_rounds_use_the_step_s_own_real_samples(generator):
    disc = make_head(generator)
    buffer = SampleBuffer(real_pool_size=0)
    fill(buffer, disc, n=4)
    _, real = buffer.take_fresh()
    assert buffer.real_pool == [] and buffer.real_for_round(real) is real


# -- update ratio ----------------------------------------------------------------------------------


def test_update_every_spaces_the_rounds(generator):
    disc = make_head(generator, update_every=3, max_accuracy=1.0)
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer()
    callback = DiscriminatorCallback(trainer, buffer, DiscriminatorReward(disc, buffer, disc.config.reward))
    args = type("A", (), {"output_dir": "unused"})()
    for step in range(1, 7):
        fill(buffer, disc, n=4, offset=4 * step)
        state = type("S", (), {"global_step": step})()
        callback.on_step_end(args, state, None)
    assert trainer.rounds == 2  # after policy steps 3 and 6 only


# -- SFT loss term ---------------------------------------------------------------------------------


def test_real_response_loss_scores_only_response_tokens(generator):
    model, tok = generator
    term = RealResponseLoss(tok, REAL[:8], coef=1.0, batch_size=4, seed=0)
    batch = term.batch(torch.device("cpu"))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        scored = labels != -100
        assert scored.any() and (ids[scored] == labels[scored]).all()
        assert not scored[: int(mask.sum())][0]  # the prompt's first token is never scored
        assert labels[scored][-1] == tok.eos_token_id  # the response ends with end-of-sequence
        assert (labels[mask == 0] == -100).all()


def test_real_response_loss_trains_toward_the_real_responses(generator):
    import copy

    model, tok = generator
    model = copy.deepcopy(model).train()
    term = RealResponseLoss(tok, REAL[:4], coef=1.0, batch_size=8, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = term.loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sft_loss_settings_are_validated(tmp_path):
    base = {"model": {"name_or_path": "org/model"}, "data": {"train": "x.jsonl"}}
    with pytest.raises(RecipeError, match=r"sft_loss\.coef"):
        parse_recipe({**base, "sft_loss": {"coef": -1}}, tmp_path)
    with pytest.raises(RecipeError, match=r"sft_loss: unknown key 'cof'.*Did you mean 'coef'"):
        parse_recipe({**base, "sft_loss": {"cof": 0.1}}, tmp_path)


def test_real_response_loss_keeps_response_tokens_when_the_prompt_is_long(generator):
    model, tok = generator
    long_prompt = " ".join([REAL[0].prompt_text] * 20) + "\n"
    pair = REAL[0].__class__(long_prompt, REAL[0].prompt_text, REAL[0].response)
    term = RealResponseLoss(tok, [pair], coef=1.0, batch_size=2, max_length=16)
    batch = term.batch(torch.device("cpu"))
    assert batch["input_ids"].shape[1] == 16
    assert (batch["labels"] != -100).sum(dim=1).min() > 0  # never a batch without scored tokens (NaN)
    assert torch.isfinite(term.loss(model))


@pytest.mark.parametrize("scaled_by_trainer", [True, False])
def test_sft_term_is_scaled_for_gradient_accumulation_like_the_policy_loss(generator, scaled_by_trainer):
    from collections import defaultdict

    from gan_rl.trainer.sft_term import RealResponseLossMixin

    model, tok = generator

    class PolicyTrainer:  # stands in for GRPOTrainer (scales its own loss) or RLOOTrainer (does not)
        loss_is_scaled_for_ga = scaled_by_trainer
        current_gradient_accumulation_steps = 4
        accelerator = type(
            "Acc", (), {"unwrap_model": staticmethod(lambda m: m), "gather": staticmethod(lambda t: t)}
        )()

        def __init__(self):
            self._metrics = defaultdict(lambda: defaultdict(list))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return torch.tensor(1.0)

    trainer = type("Trainer", (RealResponseLossMixin, PolicyTrainer), {})()
    trainer.real_response_loss = RealResponseLoss(tok, REAL[:1], coef=0.5, batch_size=2, seed=0)
    model.train()
    total = trainer.compute_loss(model, {})
    sft = trainer._metrics["train"]["sft/loss"][0]
    expected = 1.0 + 0.5 * sft / (4 if scaled_by_trainer else 1)
    assert total.item() == pytest.approx(expected, rel=1e-5)


# -- the Bradley-Terry loss (GAD) ----------------------------------------------------------------------


def test_bradley_terry_loss_ranks_each_real_response_above_its_prompt_s_generation(generator):
    from gan_rl.discriminator.losses import bradley_terry_loss

    assert bradley_terry_loss(torch.tensor([3.0]), torch.tensor([-3.0])) < bradley_terry_loss(
        torch.tensor([-3.0]), torch.tensor([3.0])
    )
    disc = make_head(generator, loss="bradley_terry", max_accuracy=1.0)
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer()
    fill(buffer, disc)
    real, fake = disc.featurize(REAL[:16], cache=True), disc.featurize(FAKE[:16])
    gap_before = (disc.score(real) - disc.score(fake)).mean().item()
    stats = trainer.train_round(buffer, updates=40)
    assert stats is not None and stats.updates == 40
    assert stats.acc_real == stats.acc_generated  # one number: the share of pairs ranked right
    after = disc.score(real) - disc.score(fake)
    assert after.mean().item() > gap_before + 1.0 and (after > 0).float().mean().item() > 0.9
    # Its guard measures ranking too: a round after learning is skipped with the guard on.
    guarded = DiscriminatorTrainer(disc, DiscriminatorConfig(**{**disc.config.__dict__, "max_accuracy": 0.8}))
    fill(buffer, disc, offset=16)
    assert guarded.train_round(buffer, updates=5).skipped


def test_bradley_terry_needs_real_partners_and_rejects_label_smoothing(generator):
    disc = make_head(generator, loss="bradley_terry")
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer()
    # Generations recorded without their pairs have no known partner: no round, nothing consumed wrongly.
    buffer.add(disc.featurize(FAKE[:4]), disc.featurize(REAL[:4], cache=True))
    assert trainer.train_round(buffer, updates=2) is None
    with pytest.raises(RecipeError, match="label_smoothing"):
        parse_recipe(
            {
                "model": {"name_or_path": "x/y"},
                "data": {"train": {"synthetic": "quickstart"}},
                "discriminator": {"loss": "bradley_terry", "label_smoothing": 0.1},
            }
        )


def test_bradley_terry_partners_travel_with_the_checkpoint(generator, tmp_path):
    """The partner map (the latest real response per prompt) is saved with the buffers and restored in
    order, features rebuilt bit for bit; a checkpoint written before partners were saved loads none."""
    from gan_rl.trainer.callback import buffer_file, load_discriminator, save_buffers, save_discriminator

    disc = make_head(generator, loss="bradley_terry", max_accuracy=1.0)
    trainer, buffer = DiscriminatorTrainer(disc, disc.config), SampleBuffer(replay_size=8)
    fill(buffer, disc)
    assert trainer.train_round(buffer, updates=2) is not None
    saved = trainer.partners_state()
    latest = {}  # the latest real response per prompt, in the order last seen
    for pair in REAL[:16]:
        latest.pop(pair.prompt_text, None)
        latest[pair.prompt_text] = pair.response
    assert [(p["prompt_text"], p["response"]) for p in saved] == list(latest.items())
    reward = DiscriminatorReward(disc, buffer, disc.config.reward)
    save_discriminator(tmp_path, trainer, reward)
    save_buffers(tmp_path, buffer, trainer)

    fresh = make_head(generator, loss="bradley_terry", max_accuracy=1.0)
    restored = DiscriminatorTrainer(fresh, fresh.config)
    load_discriminator(
        tmp_path, restored, DiscriminatorReward(fresh, SampleBuffer(8), fresh.config.reward), SampleBuffer(8)
    )
    assert restored.partners_state() == saved
    for key, (feature, pair) in trainer._real_by_prompt.items():
        got, got_pair = restored._real_by_prompt[key]
        assert got_pair == pair and all(torch.equal(got[k], feature[k]) for k in feature)

    state = json.loads(buffer_file(tmp_path).read_text())
    del state["partners"]
    buffer_file(tmp_path).write_text(json.dumps(state))
    load_discriminator(
        tmp_path, restored, DiscriminatorReward(fresh, SampleBuffer(8), fresh.config.reward), SampleBuffer(8)
    )
    assert restored.partners_state() == []


# -- the length-aware reward ------------------------------------------------------------------------


def test_length_coef_subtracts_the_log_length_ratio_to_the_real_response(generator):
    """With ``reward.length_coef`` the reward falls by coef x |log((1 + words) / (1 + real words))|: nothing
    at the real response's length, the same for twice and half of it, and the discriminator's part as is."""
    from gan_rl.types import PROMPT_TEXT, REAL_RESPONSE

    real = "one two three four five six seven"  # 7 words: (1 + 15) / (1 + 7) = 2 and (1 + 3) / 8 = 1 / 2
    completions = [real, " ".join(["word"] * 15), "a b c"]
    columns = {PROMPT_TEXT: ["topic"] * 3, REAL_RESPONSE: [real] * 3}
    base_disc = make_head(generator)
    aware_disc = make_head(generator, reward={"length_coef": 0.5})
    aware_disc.load_state_dict(base_disc.state_dict())  # the same discriminator: only the length term differs
    base = DiscriminatorReward(base_disc, SampleBuffer(8), base_disc.config.reward)
    aware = DiscriminatorReward(aware_disc, SampleBuffer(8), aware_disc.config.reward)
    plain = torch.tensor(base(["topic"] * 3, completions, **columns))
    logged = {}
    with_length = torch.tensor(
        aware(["topic"] * 3, completions, log_metric=lambda k, v: logged.__setitem__(k, v), **columns)
    )
    penalty = plain - with_length
    expected = 0.5 * torch.tensor([1.0, 2.0, 2.0]).log()
    assert torch.allclose(penalty, expected, atol=1e-5), penalty
    assert logged["rewards/length_penalty"] == pytest.approx(expected.mean().item() / 0.5, abs=1e-5)


def test_length_coef_is_validated():
    with pytest.raises(ValueError, match="length_coef: expected a finite number >= 0, got -1"):
        DiscriminatorConfig(reward={"length_coef": -1})
