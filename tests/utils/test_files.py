"""Whether a weights, optimizer or state file reads (:mod:`gan_rl.utils.files`): from its header, before a
loader fails on it naming no file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from gan_rl.utils.files import file_problem, unreadable, weight_files


@pytest.fixture()
def weights(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(8), "b": torch.ones(2, 3)}, str(path))
    return path


def test_an_intact_safetensors_file_reads(weights):
    assert file_problem(weights) is None


@pytest.mark.parametrize("size", [0, 5, 100, -1])
def test_a_safetensors_file_cut_short_is_named(weights, size):
    data = weights.read_bytes()
    weights.write_bytes(data[:size])
    problem = file_problem(weights)
    assert problem is not None and ("truncated" in problem or "empty" in problem), problem


def test_a_safetensors_file_longer_than_its_header_is_corrupt(weights):
    """safetensors itself refuses a file its header does not cover exactly."""
    weights.write_bytes(weights.read_bytes() + b"xx")
    assert "2 more than its header describes" in file_problem(weights)


def test_a_safetensors_header_that_is_not_json_is_corrupt(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{}" + b"\0" * 16)
    assert "header is not JSON" in file_problem(path)


def test_torch_archives_and_json(tmp_path):
    archive = tmp_path / "optimizer.pt"
    torch.save({"state": {0: torch.zeros(16)}}, archive)
    assert file_problem(archive) is None
    archive.write_bytes(archive.read_bytes()[:100])
    assert "not a complete torch zip archive" in file_problem(archive)
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(b"\x80\x02 a pickle: left to torch.load")
    assert file_problem(legacy) is None
    state = tmp_path / "trainer_state.json"
    state.write_text('{"global_step": 2, "log_hist')
    assert "not valid JSON" in file_problem(state)
    assert file_problem(tmp_path / "absent.pt") == "is missing"


def test_a_sharded_checkpoint_lists_its_shards_and_a_missing_one(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    files = weight_files(tmp_path)
    assert [f.name for f in files] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert unreadable(files) == [(tmp_path / "model-00002-of-00002.safetensors", "is missing")]
