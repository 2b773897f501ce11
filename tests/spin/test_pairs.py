"""SPIN's pairs, without a model: each row's real response against that row's own samples, in TRL's
preference format (plain or conversational), written and read back unchanged."""

from __future__ import annotations

import pytest
from datasets import Dataset

from gan_rl.trainer.spin.pairs import (
    PreferencePair,
    build_pairs,
    check_prompt_completion,
    iteration_rows,
    preference_dataset,
    read_pairs,
    write_pairs,
)

PLAIN = Dataset.from_list([{"prompt": f"prompt {i}\n", "completion": f"real {i}"} for i in range(5)])
CHAT = Dataset.from_list(
    [
        {
            "prompt": [{"role": "user", "content": f"prompt {i}"}],
            "completion": [{"role": "assistant", "content": f"real {i}"}],
        }
        for i in range(5)
    ]
)


def test_each_real_response_is_paired_with_its_own_prompts_samples():
    rows = [4, 1, 3]
    # Samples as sample_rejected returns them: prompt-major, 2 per prompt.
    samples = [(f"own {r}.{j}", j == 0) for r in rows for j in range(2)]
    pairs = build_pairs(PLAIN, rows, samples, samples_per_prompt=2)
    assert len(pairs) == 6
    for pair in pairs:
        assert pair.prompt == f"prompt {pair.row}\n"
        assert pair.chosen == f"real {pair.row}"
        assert pair.rejected == f"own {pair.row}.{pair.sample}"
        assert pair.ended is (pair.sample == 0)
    assert [(p.row, p.sample) for p in pairs] == [(4, 0), (4, 1), (1, 0), (1, 1), (3, 0), (3, 1)]


def test_conversational_pairs_keep_messages_and_reject_an_assistant_message():
    assert check_prompt_completion(CHAT) is True and check_prompt_completion(PLAIN) is False
    pairs = build_pairs(CHAT, [2], [("own 2", True)], samples_per_prompt=1)
    assert pairs[0].prompt == [{"role": "user", "content": "prompt 2"}]
    assert pairs[0].chosen == [{"role": "assistant", "content": "real 2"}]
    assert pairs[0].rejected == [{"role": "assistant", "content": "own 2"}]
    row = preference_dataset(pairs)[0]
    assert set(row) == {"prompt", "chosen", "rejected"} and row["rejected"] == pairs[0].rejected


def test_chat_template_kwargs_travel_with_the_pairs_for_trl():
    pairs = build_pairs(CHAT, [0], [("own", True)], samples_per_prompt=1)
    assert preference_dataset(pairs, {"enable_thinking": False})[0]["chat_template_kwargs"] == {
        "enable_thinking": False
    }


def test_a_sample_count_that_does_not_match_the_rows_is_refused():
    with pytest.raises(ValueError, match="3 samples for 2 rows x 2 per prompt"):
        build_pairs(PLAIN, [0, 1], [("a", True)] * 3, samples_per_prompt=2)


def test_pairs_file_round_trips(tmp_path):
    pairs = build_pairs(CHAT, [0, 1], [("ü ✓", True), ("", False)], samples_per_prompt=1)
    path = tmp_path / "iteration-1" / "pairs.jsonl"
    write_pairs(path, pairs)
    assert read_pairs(path) == pairs
    assert not path.with_name("pairs.jsonl.tmp").exists()
    assert all(isinstance(p, PreferencePair) for p in read_pairs(path))


def test_iteration_rows_are_all_rows_or_a_seeded_subset():
    assert iteration_rows(5, None, seed=0) == [0, 1, 2, 3, 4]
    assert iteration_rows(5, 9, seed=0) == [0, 1, 2, 3, 4]
    subset = iteration_rows(100, 10, seed=1)
    assert len(subset) == 10 == len(set(subset)) and subset == sorted(subset)
    assert iteration_rows(100, 10, seed=1) == subset
    assert iteration_rows(100, 10, seed=2) != subset


def test_a_dataset_without_prompt_completion_columns_is_refused_naming_them():
    with pytest.raises(ValueError, match=r"'prompt' and 'completion'.*\['topic', 'post'\]"):
        check_prompt_completion(Dataset.from_list([{"topic": "a", "post": "b"}]))


def test_a_chat_prompt_with_a_text_completion_is_refused():
    mixed = Dataset.from_list([{"prompt": [{"role": "user", "content": "a"}], "completion": "b"}])
    with pytest.raises(ValueError, match="mixes formats"):
        check_prompt_completion(mixed)
