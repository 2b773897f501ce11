"""``gan-rl gumbel``: the relaxed generation, the discriminator on relaxed tokens, the recipe, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tokenizers.processors import TemplateProcessing

from gan_rl.cli.main import main
from gan_rl.cli.recipe import load_recipe
from gan_rl.cli.trl_config import build_trainer_config
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.encoder import FrozenEncoder
from gan_rl.discriminator.factory import build_discriminator
from gan_rl.gumbel.config import GumbelConfig
from gan_rl.gumbel.trainer import RelaxedDiscriminator, gumbel_softmax, relaxed_generate, soft_embed
from gan_rl.types import Pair
from tests.conftest import REAL, head_config


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def error_line(*args: str, code: int = 2, prefix: str = "error: ") -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Gumbel-softmax and relaxed generation
# --------------------------------------------------------------------------------------------------


def test_gumbel_max_samples_follow_the_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    _, hard = gumbel_softmax(logits, tau=1.0, straight_through=False)
    freq = torch.bincount(hard, minlength=4).float() / hard.numel()
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)


def test_straight_through_is_one_hot_forward_and_soft_backward():
    logits = torch.randn(3, 7, requires_grad=True)
    weights = torch.randn(7)
    torch.manual_seed(1)
    st, hard = gumbel_softmax(logits, tau=0.5, straight_through=True)
    assert torch.equal(st.detach(), torch.nn.functional.one_hot(hard, 7).float())
    (st * weights).sum().backward()
    grad_st = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(1)
    soft, _ = gumbel_softmax(logits, tau=0.5, straight_through=False)
    (soft * weights).sum().backward()
    assert torch.allclose(grad_st, logits.grad) and grad_st.abs().sum() > 0


def _prompts(tok, texts):
    tok.padding_side = "left"
    enc = tok([t + "\n" for t in texts], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_relaxed_generation_with_one_hot_tokens_is_the_models_own_forward(generator, use_cache):
    """Straight-through vectors are exact one-hots: each step's distribution must be the model's
    distribution after the hard tokens, with and without the key/value cache, on left-padded prompts."""
    model, tok = generator
    model.eval()
    ids, mask = _prompts(tok, ["people in paris talk about football", "rain"])
    torch.manual_seed(0)
    samples = relaxed_generate(model, ids, mask, 5, 1.0, 1.0, True, {tok.eos_token_id}, use_cache=use_cache)
    assert samples.soft.shape == (2, 5, model.config.vocab_size) and samples.hard.shape == (2, 5)
    full = torch.cat([ids, samples.hard], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(samples.hard)], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_mask, position_ids=positions).logits
    expected = torch.log_softmax(logits[:, ids.shape[1] - 1 : -1].float(), -1)
    assert torch.allclose(samples.log_probs.detach(), expected, atol=1e-4)


def test_relaxed_generation_is_differentiable_in_the_generator(generator):
    model, tok = generator
    model.train()
    ids, mask = _prompts(tok, ["people in tokyo talk about pizza tonight"])
    samples = relaxed_generate(model, ids, mask, 4, 0.7, 1.0, False, {tok.eos_token_id})
    model.zero_grad()
    (samples.soft[:, -1] @ torch.arange(samples.soft.shape[-1]).float()).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    model.zero_grad()
    model.eval()


# --------------------------------------------------------------------------------------------------
# The discriminator on relaxed tokens
# --------------------------------------------------------------------------------------------------


def relaxed_and_hard_logits(disc, model, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's logits for relaxed one-hot generations of the first real prompts (with gradients
    to the generator) and for the same generations decoded to text and scored as hard samples."""
    relaxed = RelaxedDiscriminator(disc, tok, model.config.vocab_size)
    pairs = REAL[:3]
    ids, mask = _prompts(tok, [p.prompt_text for p in pairs])
    torch.manual_seed(0)
    samples = relaxed_generate(model, ids, mask, 5, 1.0, 1.0, True, {tok.eos_token_id})
    logits = relaxed([Pair(p.prompt, p.prompt_text, "") for p in pairs], samples)
    texts = [
        tok.decode([t for t, v in zip(row, valid, strict=True) if v], skip_special_tokens=True)
        for row, valid in zip(samples.hard.tolist(), samples.valid.tolist(), strict=True)
    ]
    ended = samples.ended.tolist()
    hard_pairs = [Pair(p.prompt, p.prompt_text, t, e) for p, t, e in zip(pairs, texts, ended, strict=True)]
    return logits, disc.score(disc.featurize(hard_pairs))


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_head_on_one_hot_tokens_scores_as_on_the_decoded_text(generator, layer):
    """The relaxed path with one-hot vectors is the hard path: the same logit as featurize + score of the
    decoded text, at any encoder layer; gradients reach the generator through the frozen encoder and the
    head gets none."""
    model, tok = generator
    model.eval()
    encoder = FrozenEncoder(tok, model.config.hidden_size, layer, generator_format=True, model=model)
    disc = build_discriminator(head_config(encoder_layer=layer), encoder=encoder)
    model.zero_grad()
    logits, expected = relaxed_and_hard_logits(disc, model, tok)
    assert torch.allclose(logits.detach(), expected, atol=1e-4)
    logits.sum().backward()
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in disc.parameters()) and all(p.requires_grad for p in disc.parameters())
    model.zero_grad()


@pytest.mark.parametrize(("conditional", "mark_end"), [(True, True), (True, False), (False, True)])
def test_classifier_on_one_hot_tokens_scores_as_on_the_decoded_text(
    generator, tiny_classifier_dir, conditional, mark_end
):
    """Kind ``classifier`` reads the relaxed response inside the same token frame as its hard path (the
    tokenizer's special tokens around the prompt and the response: here a template that puts them on both
    sides), so one-hot vectors score as the decoded text does."""
    model, tok = generator
    model.eval()
    config = DiscriminatorConfig(
        kind="classifier",
        model=str(tiny_classifier_dir),
        conditional=conditional,
        mark_end=mark_end,
        max_length=40,
    )
    disc = build_discriminator(config, checkpoint=str(tiny_classifier_dir)).eval()
    # Special tokens around both texts of a pair, as BERT-style and Llama-style tokenizers add them.
    end = disc.tokenizer.eos_token
    disc.tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{end} $A {end}",
        pair=f"{end} $A {end} $B:1 {end}:1",
        special_tokens=[(end, disc.tokenizer.eos_token_id)],
    )
    logits, expected = relaxed_and_hard_logits(disc, model, tok)
    assert torch.allclose(logits.detach(), expected, atol=1e-4)


def test_soft_embedding_of_a_one_hot_is_the_tokens_embedding(generator):
    model, _ = generator
    embedding = model.get_input_embeddings()
    one_hot = torch.nn.functional.one_hot(torch.tensor([3, 9]), model.config.vocab_size).float()
    assert torch.allclose(soft_embed(embedding, one_hot), embedding(torch.tensor([3, 9])))


def _tiny_with_other_vocabulary(path: Path, head: str) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from gan_rl.cli.models import build_word_tokenizer

    tok = build_word_tokenizer(["a completely different vocabulary of words", "zebra quartz"])
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    cls = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    cls.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("kind", "field"), [("classifier", "discriminator.model"), ("head", "discriminator.encoder")]
)
def test_a_discriminator_of_another_vocabulary_is_one_recipe_error(kind, field, tmp_path, recipe_factory):
    other = _tiny_with_other_vocabulary(tmp_path / "other", "causal" if kind == "head" else "classifier")
    disc = {"kind": kind, "model": str(other)} if kind == "classifier" else {"encoder": str(other)}
    line = error_line("gumbel", str(recipe_factory(discriminator=disc)))
    assert line.startswith(f"error: {field}: gan-rl gumbel feeds the generator's relaxed tokens")
    assert "another vocabulary" in line
    assert not (tmp_path / "out" / "run_summary.json").exists()


def test_a_length_aware_reward_is_refused_by_gumbel_only(tmp_path, recipe_factory):
    """A count of words has no gradient: gumbel refuses the length-aware reward in one line, before loading."""
    recipe = recipe_factory(discriminator={"reward": {"length_coef": 0.5}})
    line = error_line("gumbel", str(recipe))
    assert line.startswith("error: discriminator.reward.length_coef: gumbel back-propagates")
    assert error_line("check", str(recipe), "--algorithm", "gumbel") == line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------------


def test_gumbel_section_builds_the_gumbel_config(recipe_factory):
    recipe = load_recipe(
        recipe_factory(
            gumbel={"tau_start": 2.0, "tau_end": 0.5, "tau_steps": 10, "straight_through": True},
            trainer={"num_iterations": 2},  # ppo's and reinforce's: not a gumbel field, left out
            ppo={"epsilon": 0.3},
        )
    )
    args = build_trainer_config(recipe, "gumbel", remove_unused_columns=False)
    assert isinstance(args, GumbelConfig) and args.straight_through and args.max_completion_length == 6
    assert args.tau(0) == 2.0 and args.tau(5) == pytest.approx(1.0) and args.tau(100) == 0.5
    assert not hasattr(args, "num_iterations")
    ppo = build_trainer_config(recipe, "ppo")
    assert ppo.num_iterations == 2 and ppo.epsilon == 0.3


@pytest.mark.parametrize(
    ("algorithm", "sections", "message"),
    [
        ("gumbel", {"gumbel": {"tau_start": 0}}, "tau_start: expected positive, got 0"),
        (
            "gumbel",
            {"gumbel": {"tua_start": 1.0}},
            "gumbel: unknown key 'tua_start'. Did you mean 'tau_start'?",
        ),
        ("gumbel", {"gumbel": {"loss": "hinge"}}, "gumbel.loss: 'hinge' is not a valid choice"),
        (
            "gumbel",
            {"gumbel": {"num_generations": 3}},
            "per_device_train_batch_size: 8 completions do not split",
        ),
        (
            "ppo",
            {"trainer": {"tau_start": 1.0}},
            "trainer.tau_start: only GumbelConfig (gumbel) has this field",
        ),
        ("ppo", {"gumbel": {"tua_start": 1.0}}, "gumbel: unknown key 'tua_start'"),
    ],
)
def test_bad_gumbel_fields_are_one_line(algorithm, sections, message, recipe_factory):
    line = error_line(algorithm, str(recipe_factory(**sections)))
    assert message in line, line


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _summary(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def test_gumbel_end_to_end_leaves_generator_and_discriminator(tmp_path, recipe_factory):
    out = tmp_path / "out"
    output = cli(
        "gumbel",
        str(recipe_factory(gumbel={"tau_start": 2.0, "tau_end": 0.5, "tau_steps": 3})),
        "--samples",
        "4",
    )
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["algorithm"] == "gumbel" and summary["steps"] == 3
    assert summary["disc_rounds"] >= 3 and summary["reward_first"] is not None
    for name in ("model.safetensors", "recipe.yaml", "trainer_state.json", "discriminator/model.safetensors"):
        assert (out / name).is_file(), name
    assert "gan-rl gumbel: finished" in output
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in logs if "gumbel/tau" in h]
    assert [h["gumbel/tau"] for h in steps] == pytest.approx(
        [2.0, 2.0 * 0.25 ** (1 / 3), 2.0 * 0.25 ** (2 / 3)]
    )
    assert all("disc/loss" in h and "reward" in h and "entropy" in h for h in steps)
    # The discriminator trained on hard samples through the buffer, as in ppo.
    state = json.loads((out / "discriminator" / "state.json").read_text())
    assert state["trainer"]["rounds"] == summary["disc_rounds"] and state["reward"]["calls"] == 3


def test_gumbel_with_lora_kl_sft_term_and_classifier(tmp_path, recipe_factory, tiny_classifier_dir):
    """LoRA (the KL reference and the frozen encoder: adapters off), the KL and the SFT term; and a
    classifier that shares the generator's tokenizer reads the relaxed tokens."""
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    out = tmp_path / "out"
    cli(
        "gumbel",
        str(
            recipe_factory(
                model={"lora": lora}, trainer={"beta": 0.1}, sft_loss={"coef": 0.5, "batch_size": 4}
            )
        ),
        "--samples",
        "0",
    )
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    # KL >= 0 up to float rounding: at step 1 the LoRA policy is its reference (B = 0), KL ~ +-1e-9.
    assert all(h["kl"] >= -1e-6 and "sft/loss" in h for h in logs if "gumbel/tau" in h)
    assert (out / "adapter_model.safetensors").is_file()
    classifier = {"kind": "classifier", "model": str(tiny_classifier_dir)}
    cli(
        "gumbel",
        str(recipe_factory(name="cls.yaml", discriminator=classifier)),
        "--samples",
        "0",
        "--overwrite",
    )
    assert _summary(out)["status"] == "completed"
    assert json.loads((out / "discriminator" / "state.json").read_text())["kind"] == "classifier"


def test_gumbel_checkpoints_and_resumes(tmp_path, recipe_factory):
    out = tmp_path / "out"
    recipe = recipe_factory(trainer={"max_steps": 4, "save_strategy": "steps", "save_steps": 2})
    cli("gumbel", str(recipe), "--samples", "0")
    assert (out / "checkpoint-2" / "discriminator" / "state.json").is_file()
    (out / "run_summary.json").unlink()
    cli("gumbel", str(recipe), "--samples", "0", "--resume", str(out / "checkpoint-2"))
    summary = _summary(out)
    assert summary["steps"] == 4 and summary["restored"]["path"].endswith("checkpoint-2/discriminator")


@pytest.mark.parametrize(
    "discriminator",
    [
        {"real_pool_size": 16},
        # A one-pair real pool: the replayed generations' real partners (the latest real response per
        # prompt) come back from the checkpoint alone (without them the resumed run drops those pairs).
        {"loss": "bradley_terry", "real_pool_size": 1},
    ],
    ids=["bce", "bradley-terry-small-pool"],
)
def test_gumbel_resumed_run_is_bit_identical_to_the_uninterrupted_one(
    tmp_path, recipe_factory, discriminator
):
    """A run resumed from step 2 of 4 ends with the same generator and discriminator, bit for bit, as the
    uninterrupted run: the Gumbel noise, the replay, the real pool, the Bradley-Terry partners and the
    discriminator's draws all come back as they were (checked like ppo's in tests/cli/test_resume.py)."""
    from safetensors.torch import load_file

    recipe = recipe_factory(
        trainer={"max_steps": 4, "save_strategy": "steps", "save_steps": 2},
        discriminator={"replay_size": 8, "replay_fraction": 0.5, "cache_size": 64, **discriminator},
    )
    out, resumed = tmp_path / "out", tmp_path / "resumed"
    cli("gumbel", str(recipe), "--samples", "0")
    buffer = json.loads((out / "checkpoint-2" / "discriminator" / "buffer.rank0.json").read_text())
    assert bool(buffer["partners"]) is (discriminator.get("loss") == "bradley_terry")
    cli(
        "gumbel", str(recipe), "--samples", "0", "--resume", str(out / "checkpoint-2"),
        "--output-dir", str(resumed),
    )  # fmt: skip
    for name in ("discriminator/model.safetensors", "model.safetensors"):
        a, b = load_file(str(out / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys()
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff == 0.0, f"{name}: the resumed gumbel run differs by up to {diff:g}"


def test_a_non_finite_generator_loss_stops_the_run(tmp_path, recipe_factory, monkeypatch):
    from gan_rl.gumbel import trainer as gumbel

    monkeypatch.setattr(
        gumbel.RelaxedDiscriminator, "__call__", lambda self, pairs, s: s.soft.sum((1, 2)) * torch.nan
    )
    line = error_line("gumbel", str(recipe_factory()), code=1, prefix="training failed: ")
    assert "step 0: the gumbel generator loss is nan" in line
    assert not (tmp_path / "out" / "run_summary.json").exists()
