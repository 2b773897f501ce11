"""Both discriminator kinds, the reward forms, the buffer/round cycle and checkpointing."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.config import DiscriminatorConfig, DiscriminatorRewardConfig
from gan_rl.discriminator.encoder import FrozenEncoder
from gan_rl.discriminator.factory import build_discriminator
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import InputError
from gan_rl.trainer.callback import DiscriminatorCallback, load_discriminator, save_discriminator
from gan_rl.trainer.reward import DiscriminatorReward, reward_from_logits
from gan_rl.types import Pair
from tests.conftest import FAKE, REAL, head_config, make_head


def classifier_config(checkpoint, **kw) -> DiscriminatorConfig:
    """The tests' classifier: head_config's shared settings, none of the fields only a head reads."""
    base = {"max_length": 40, "batch_size": 32, "learning_rate": 3e-3}
    cfg = DiscriminatorConfig(kind="classifier", model=str(checkpoint), **{**base, **kw})
    cfg.validate()
    return cfg


def make_classifier(tiny_classifier_dir, **kw):
    return build_discriminator(classifier_config(tiny_classifier_dir, **kw))


def train_steps(disc, steps=30):
    trainer = DiscriminatorTrainer(disc, disc.config)
    real, fake = disc.featurize(REAL, cache=True), disc.featurize(FAKE)
    losses = [trainer.update(real[:16], fake[:16])[0] for _ in range(steps)]
    return trainer, losses


@pytest.mark.parametrize(
    "options", [{}, {"lstm": True, "lstm_hidden": 16}, {"conditional": False}, {"encoder_layer": 1}]
)
def test_head_shapes(generator, options):
    disc = make_head(generator, **options)
    feats = disc.featurize(REAL[:5])
    assert feats[0]["hidden"].shape[-1] == generator[0].config.hidden_size
    if disc.config.conditional:
        assert not feats[0]["response_mask"].all()  # the prompt is read but not pooled
    logits = disc(disc.collate(feats))
    assert logits.shape == (5,) and torch.isfinite(logits).all()


# The tiny model has 2 layers: hidden_states = [embeddings, layer 0 output, normed layer 1 output].
# ``layers_run``: how many decoder layers the encoder runs for that hidden state.
@pytest.mark.parametrize(("layer", "layers_run"), [(1, 1), (-2, 1), (2, 2), (-1, 2), (-3, 0), (0, 0)])
def test_intermediate_layer_stops_early_with_the_same_states(generator, layer, layers_run):
    model, tok = generator
    ids = torch.tensor([tok("pizza is amazing !")["input_ids"]])
    mask = torch.ones_like(ids)
    expected = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    encoder = FrozenEncoder(tok, model.config.hidden_size, layer=layer, model=model)
    assert torch.allclose(encoder(ids, mask), expected, atol=1e-6)
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.model.layers]
    encoder(ids, mask)
    for hook in hooks:
        hook.remove()
    assert len(calls) == layers_run  # layers after the requested one are never run


@pytest.mark.parametrize("layer", [3, -4])
def test_encoder_layer_out_of_range_names_the_field(generator, layer):
    model, tok = generator
    with pytest.raises(InputError, match=r"DiscriminatorConfig.encoder_layer: .* valid: -3 to 2"):
        FrozenEncoder(tok, model.config.hidden_size, layer=layer, model=model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_feature_is_the_same_bits_however_it_was_batched(generator, dtype):
    """What bit-identical resume rests on: a pair's frozen features do not depend on which pairs shared
    its padded chunk, how many there were, or the chunk size (cached, replayed and restored features are
    encoded in different company)."""
    model, tok = generator
    model.to(dtype)
    try:
        pairs = [*REAL[:20], *FAKE[:20]]
        batched = make_head(generator, max_length=120).featurize(pairs)  # chunks of 32, sorted by length
        mixed = make_head(generator, max_length=120, encode_batch_size=5).featurize(pairs[::-1])[::-1]
        alone = make_head(generator, max_length=120, encode_batch_size=1)
        for pair, a, b in zip(pairs, batched, mixed, strict=True):
            (c,) = alone.featurize([pair])
            assert torch.equal(a["hidden"], c["hidden"]) and torch.equal(b["hidden"], c["hidden"]), pair
    finally:
        model.to(torch.float32)


def test_chunk_padding_stops_at_a_learned_position_table(tmp_path):
    """GPT-2's 40-position table: a 37-token pair is not padded to 64 (an IndexError in ``wpe``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gan_rl.cli.models import build_word_tokenizer

    tok = build_word_tokenizer([p.prompt_text + " " + p.response for p in REAL])
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=40, n_embd=16, n_layer=1, n_head=2)
    ).eval()
    disc = make_head((model, tok), max_length=40)
    pair = Pair("a\n", "a", " ".join(["pizza"] * 60))
    (feature,) = disc.featurize([pair])
    assert feature["hidden"].shape[0] == 40 and torch.isfinite(feature["hidden"]).all()


def test_head_handles_empty_and_long_responses(generator):
    disc = make_head(generator)
    pairs = [Pair("a\n", "a", ""), Pair("b\n", "b", "pizza " * 200)]
    feats = disc.featurize(pairs)
    assert feats[1]["hidden"].shape[0] <= disc.config.max_length
    assert torch.isfinite(disc.score(feats)).all()


def test_head_encoder_is_frozen_and_not_saved(generator):
    disc = make_head(generator)
    assert all(not k.startswith("encoder") for k in disc.state_dict())
    before = [p.clone() for p in generator[0].parameters()]
    train_steps(disc, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(before, generator[0].parameters(), strict=True))


@pytest.mark.parametrize("options", [{}, {"lstm": True, "lstm_hidden": 16}])
def test_head_training_lowers_loss_on_separable_data(generator, options):
    disc = make_head(generator, **options)
    trainer, losses = train_steps(disc)
    assert losses[-1] < 0.5 * losses[0]
    real_logits = disc.score(disc.featurize(REAL[32:]))
    fake_logits = disc.score(disc.featurize(FAKE[32:]))
    assert (real_logits > 0).float().mean() > 0.8 and (fake_logits < 0).float().mean() > 0.8


def test_classifier_kind(tiny_classifier_dir):
    disc = make_classifier(tiny_classifier_dir)
    logits = disc(disc.collate(disc.featurize(REAL[:4])))
    assert logits.shape == (4,)
    _, losses = train_steps(disc)
    assert losses[-1] < 0.5 * losses[0]


def test_classifier_with_lora_trains_only_adapters(tiny_classifier_dir):
    from gan_rl.utils.lora import ClassifierLoraSettings

    disc = make_classifier(tiny_classifier_dir, lora=ClassifierLoraSettings(r=4, alpha=8))
    trainable = sum(p.numel() for p in disc.trainable_parameters())
    total = sum(p.numel() for p in disc.parameters())
    assert 0 < trainable < total
    _, losses = train_steps(disc, steps=40)
    assert losses[-1] < losses[0]


def test_classifier_truncates_long_responses_and_trains_in_float32(tiny_classifier_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    bf16_dir = tmp_path / "bf16"
    AutoModelForSequenceClassification.from_pretrained(
        tiny_classifier_dir, dtype=torch.bfloat16
    ).save_pretrained(bf16_dir)
    AutoTokenizer.from_pretrained(tiny_classifier_dir).save_pretrained(bf16_dir)
    cfg = classifier_config(bf16_dir, max_length=16)
    disc = build_discriminator(cfg)
    assert all(p.dtype == torch.float32 for p in disc.parameters())  # AdamW updates are not rounded away
    long = [Pair("a\n", "people in rome talk about pizza", "pizza is great ! " * 40)]
    features = disc.featurize(long)  # a response alone longer than max_length
    assert len(features[0]) == 16 and torch.isfinite(disc.score(features)).all()


@pytest.mark.parametrize("options", [{}, {"lstm": True, "lstm_hidden": 16}])
def test_unconditional_head_scores_empty_responses_without_a_bos_token(tiny_model_dir, options):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.bos_token = None  # like Qwen's tokenizer
    encoder = FrozenEncoder(tok, model.config.hidden_size, generator_format=True, model=model)
    disc = build_discriminator(head_config(conditional=False, **options), encoder=encoder)
    pairs = [Pair("a\n", "a", ""), Pair("b\n", "b", ""), Pair("c\n", "c", "pizza is great !")]
    assert torch.isfinite(disc.score(disc.featurize(pairs))).all()
    assert torch.isfinite(disc.score(disc.featurize(pairs[:2]))).all()  # a batch of empty ones only


def test_real_feature_cache_is_bounded(generator):
    disc = make_head(generator, cache_size=10)
    disc.featurize(REAL[:20], cache=True)
    assert len(disc._real_cache) == 10
    again = disc.featurize(REAL[15:20], cache=True)
    assert all(
        torch.equal(a["hidden"], b["hidden"]) for a, b in zip(again, disc.featurize(REAL[15:20]), strict=True)
    )


# -- reward -------------------------------------------------------------------------------------------


def test_reward_forms():
    z = torch.tensor([-2.0, 0.0, 3.0])
    d = torch.sigmoid(z)
    assert torch.allclose(reward_from_logits(z, "logit"), z)
    assert torch.allclose(reward_from_logits(z, "prob"), d)
    assert torch.allclose(reward_from_logits(z, "log_prob"), torch.log(d))
    assert torch.allclose(reward_from_logits(z, "gail"), -torch.log(1 - d))
    for form in ("logit", "prob", "log_prob", "gail"):  # all increase with "realness"
        r = reward_from_logits(z, form)
        assert (r[1:] > r[:-1]).all()


def reward_call(reward, pairs):
    return reward(
        prompts=[p.prompt for p in pairs],
        completions=[p.response for p in pairs],
        prompt_text=[p.prompt_text for p in pairs],
        real_response=[r.response for r in REAL[: len(pairs)]],
    )


def test_reward_clip_and_normalisation(generator):
    disc = make_head(generator)
    buffer = SampleBuffer()
    clipped = DiscriminatorReward(disc, buffer, DiscriminatorRewardConfig(form="logit", clip=[-0.01, 0.01]))
    assert all(-0.01 <= r <= 0.01 for r in reward_call(clipped, FAKE[:8]))
    batch = DiscriminatorReward(disc, buffer, DiscriminatorRewardConfig(normalize="batch"))
    r = torch.tensor(reward_call(batch, FAKE[:8]))
    assert abs(r.mean().item()) < 1e-5 and abs(r.std().item() - 1) < 1e-3
    running = DiscriminatorReward(
        disc, buffer, DiscriminatorRewardConfig(normalize="running", running_momentum=0.5)
    )
    reward_call(running, FAKE[:8])
    assert running.running.count == 8 and running.running.var > 0


def test_reward_records_fresh_samples_and_scores_chat_completions(generator):
    disc = make_head(generator)
    buffer = SampleBuffer()
    reward = DiscriminatorReward(disc, buffer, DiscriminatorRewardConfig())
    chat = [[{"role": "assistant", "content": p.response}] for p in FAKE[:4]]
    logged = {}
    out = reward(
        prompts=[p.prompt for p in FAKE[:4]],
        completions=chat,
        prompt_text=[p.prompt_text for p in FAKE[:4]],
        real_response=[p.response for p in REAL[:4]],
        log_metric=logged.__setitem__,
    )
    assert len(out) == 4 and all(math.isfinite(x) for x in out)
    assert len(buffer.fresh_generated) == 4 and len(buffer.fresh_real) == 4
    assert "disc/prob_generated_real" in logged


def test_evaluation_rewards_do_not_reach_the_buffer(generator):
    disc = make_head(generator)
    buffer = SampleBuffer()
    reward = DiscriminatorReward(disc, buffer, DiscriminatorRewardConfig(normalize="running"))
    reward.recording = lambda: False  # the policy is in eval mode: TRL is evaluating on the test split
    kwargs = {
        "prompt_text": [p.prompt_text for p in REAL[:4]],
        "real_response": [p.response for p in REAL[:4]],
    }
    rewards = reward(prompts=[p.prompt for p in REAL[:4]], completions=["pizza !"] * 4, **kwargs)
    assert len(rewards) == 4
    assert buffer.fresh_generated == [] and buffer.fresh_real == [] and reward.running.count == 0
    reward.recording = lambda: True
    reward(prompts=[p.prompt for p in REAL[:4]], completions=["pizza !"] * 4, **kwargs)
    assert len(buffer.fresh_generated) == 4 and reward.running.count == 4


def test_reward_without_real_column_is_explained(generator):
    reward = DiscriminatorReward(make_head(generator), SampleBuffer(), DiscriminatorRewardConfig())
    with pytest.raises(KeyError, match="real_response"):
        reward(prompts=["a"], completions=["b"], prompt_text=["a"])


# -- buffer, rounds, callback --------------------------------------------------------------------------


def test_replay_reservoir_keeps_past_generations():
    buffer = SampleBuffer(replay_size=5, seed=0)
    for start in range(0, 40, 10):
        buffer.add(list(range(start, start + 10)), ["r"])
        generated, real = buffer.take_fresh()
        assert generated == list(range(start, start + 10)) and real == ["r"]
    assert len(buffer.replay) == 5 and buffer.seen == 40
    assert buffer.fresh_generated == []
    assert any(x >= 10 for x in buffer.replay)  # later generations do enter the reservoir


def test_buffer_state_round_trips_as_text():
    def featurize(pairs, cache=False):  # stands in for the frozen encoder: a feature per pair
        return [f"feature of {p.response}" for p in pairs]

    def pair(i):
        return Pair([{"role": "user", "content": f"p{i}"}], f"p{i}", f"r{i}")

    buffer = SampleBuffer(replay_size=4, seed=1)
    for start in range(0, 12, 3):
        gen = [pair(i) for i in range(start, start + 3)]
        buffer.add(featurize(gen), featurize(gen[:1]), gen, gen[:1])
        buffer.take_fresh()
    buffer.add(featurize([pair(99)]), featurize([pair(98)]), [pair(99)], [pair(98)])  # pending, not taken
    state = json.loads(json.dumps(buffer.state()))

    restored = SampleBuffer(replay_size=4, seed=123)
    restored.load_state(state, featurize)
    assert restored.replay == buffer.replay and restored.replay_pairs == buffer.replay_pairs
    assert restored.fresh_generated == ["feature of r99"] and restored.fresh_real == ["feature of r98"]
    assert restored.seen == buffer.seen == 12
    # The reservoir goes on drawing exactly as the original would.
    for b in (buffer, restored):
        b.add(featurize([pair(i) for i in range(20, 30)]), [], [pair(i) for i in range(20, 30)])
        b.take_fresh()
    assert restored.replay == buffer.replay


def test_round_changes_weights_and_needs_fresh_samples(generator):
    disc = make_head(generator, replay_size=16)
    trainer = DiscriminatorTrainer(disc, disc.config)
    buffer = SampleBuffer(replay_size=16)
    assert trainer.train_round(buffer, updates=2) is None  # nothing fresh: no update
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    buffer.add(disc.featurize(FAKE[:16]), disc.featurize(REAL[:16], cache=True))
    stats = trainer.train_round(buffer, updates=3)
    assert stats is not None and stats.updates == 3 and trainer.rounds == 1
    assert 0 <= stats.acc_real <= 1 and 0 <= stats.acc_generated <= 1 and stats.loss > 0
    assert any(not torch.equal(before[k], v) for k, v in disc.state_dict().items())
    assert buffer.fresh_generated == [] and len(buffer.replay) == 16


def test_label_smoothing_changes_the_loss(generator):
    from gan_rl.discriminator.losses import bce_loss

    logits, labels = torch.tensor([5.0, -5.0]), torch.tensor([1.0, 0.0])
    assert bce_loss(logits, labels, 0.1) > bce_loss(logits, labels, 0.0)


def test_callback_warmup_runs_before_the_first_policy_update(generator):
    model, tok = generator
    disc = make_head(generator, warmup_samples=8, warmup_updates=3)
    trainer = DiscriminatorTrainer(disc, disc.config)
    buffer = SampleBuffer()
    reward = DiscriminatorReward(disc, buffer, DiscriminatorRewardConfig())
    callback = DiscriminatorCallback(
        trainer, buffer, reward, warmup_prompts=REAL[:8], generation_kwargs={"max_new_tokens": 4}
    )
    state = type("S", (), {"global_step": 0, "is_world_process_zero": True})()
    args = type("A", (), {"output_dir": "unused"})()
    callback.on_train_begin(args, state, None, model=model, processing_class=tok)
    assert trainer.rounds == 1 and callback.warmup_stats["disc/warmup_loss"] > 0
    # A reward call, then a policy step: the callback trains on the fresh samples and logs.
    reward_call(reward, FAKE[:8])
    state.global_step = 1
    callback.on_step_end(args, state, None)
    assert trainer.rounds == 2
    logs = {}
    callback.on_log(args, state, None, logs=logs)
    assert {"disc/loss", "disc/acc_real", "disc/acc_generated"} <= set(logs)


def test_save_and_load_round_trip(generator, tmp_path):
    disc = make_head(generator)
    trainer, _ = train_steps(disc, steps=3)
    trainer.rounds = 5
    reward = DiscriminatorReward(disc, SampleBuffer(), DiscriminatorRewardConfig(normalize="running"))
    reward.running.mean, reward.running.count = 0.7, 11
    save_discriminator(tmp_path / "d", trainer, reward)
    assert (tmp_path / "d" / "model.safetensors").is_file()

    fresh = make_head(generator, seed=123)
    fresh_trainer = DiscriminatorTrainer(fresh, fresh.config)
    fresh_reward = DiscriminatorReward(fresh, SampleBuffer(), DiscriminatorRewardConfig(normalize="running"))
    assert fresh_trainer.fingerprint() != trainer.fingerprint()
    load_discriminator(tmp_path / "d", fresh_trainer, fresh_reward)
    assert fresh_trainer.fingerprint() == trainer.fingerprint()
    assert fresh_trainer.rounds == 5 and fresh_reward.running.mean == 0.7
    assert fresh_trainer.optimizer.state_dict()["state"]  # the optimizer moments came back too


def test_mark_end_lets_the_discriminator_see_a_response_cut_at_the_length_limit(generator):
    model, tok = generator
    plain, marked = make_head(generator), make_head(generator, mark_end=True)
    pair = REAL[0]
    cut = Pair(pair.prompt, pair.prompt_text, pair.response, ended=False)
    assert len(marked._tokenize(pair)[0]) == len(marked._tokenize(cut)[0]) + 1  # the end token, only if ended
    assert marked._tokenize(pair)[0][-1] == tok.eos_token_id
    assert plain._tokenize(pair) == plain._tokenize(cut)  # off: the text alone
    # The reward learns from TRL's completion ids which generations ended (last id an end token).
    reward = DiscriminatorReward(
        marked, SampleBuffer(), DiscriminatorRewardConfig(), end_token_ids={tok.eos_token_id}
    )
    generated, _ = reward.pairs(
        [p.prompt for p in FAKE[:2]],
        [p.response for p in FAKE[:2]],
        prompt_text=[p.prompt_text for p in FAKE[:2]],
        real_response=[p.response for p in REAL[:2]],
        completion_ids=[[5, 6, tok.eos_token_id], [5, 6, 7]],
    )
    assert [g.ended for g in generated] == [True, False]
    # A buffer checkpoint keeps the flag (text only), and older states without it read as ended.
    assert json.loads(json.dumps(dataclasses.asdict(generated[1])))["ended"] is False
    assert Pair(**{k: v for k, v in dataclasses.asdict(generated[1]).items() if k != "ended"}).ended


def test_warmup_samples_know_whether_they_ended(generator):
    model, tok = generator
    disc = make_head(generator, mark_end=True)
    callback = DiscriminatorCallback(DiscriminatorTrainer(disc, disc.config), SampleBuffer(), None)
    callback.generation_kwargs = {"max_new_tokens": 2, "min_new_tokens": 2}
    torch.manual_seed(0)
    samples = callback.sample(model, tok, REAL[:4])
    assert [s.prompt_text for s in samples] == [p.prompt_text for p in REAL[:4]]
    assert not any(s.ended for s in samples)  # 2 tokens, no end token allowed before the limit
