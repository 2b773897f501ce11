"""Data sources on the web (issue 28, item 3): a ``url`` (or a ``path`` that is a URL) is downloaded once into
the cache and read like a local file; a local ``path`` that exists wins; a failed download is one line
(exit code 2) naming the field, the URL and where a copy would be read, and leaves nothing in the cache.

Every URL is served by a local HTTP server on 127.0.0.1: nothing reaches the internet.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gan_rl.cli.data import load_raw_splits
from gan_rl.cli.downloads import cached_path, fetch, file_sha256
from gan_rl.cli.evaluate import load_contrast
from gan_rl.cli.recipe import load_recipe, parse_recipe
from gan_rl.errors import RecipeError
from tests.cli.test_user_errors import error_line
from tests.conftest import ROOT, TWON_DIR, quickstart_texts


class Server:
    """A static file server on a random local port, counting the requests it answered."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                if self.path.startswith("/truncated/"):  # announces more bytes than it sends
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"PAR1" + b"\0" * 100)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Shut down and close the socket: the port refuses connections afterwards."""
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh download cache per test, and no proxy between the tests and 127.0.0.1."""
    root = tmp_path / "cache"
    monkeypatch.setenv("GAN_RL_CACHE", str(root))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return root


@pytest.fixture()
def server(data_files, tmp_path) -> Iterator[Server]:
    """Serves the quickstart rows as ``data.parquet`` / ``data.jsonl`` and a corrupt ``bad.parquet``."""
    root = tmp_path / "served"
    root.mkdir()
    for kind in ("parquet", "jsonl"):
        shutil.copy(data_files[kind], root / f"data.{kind}")
    (root / "bad.parquet").write_text("not parquet at all")
    (root / "bad.jsonl").write_text('{"topic": "a", "post": "b"}\n{"topic": "c", post}\n')
    running = Server(root)
    yield running
    running.stop()


def recipe_for(train, tmp_path: Path, **data):
    return parse_recipe(
        {
            "model": {"name_or_path": "x"},
            "data": {"train": train, "prompt_column": "topic", "response_column": "post", **data},
        },
        base_dir=tmp_path,
    )


def cache_files(cache: Path) -> list[Path]:
    """Every file in the cache, hidden temporary files included."""
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_url_source_loads_and_is_read_from_the_cache_afterwards(kind, server, cache, tmp_path, caplog):
    url = server.url(f"data.{kind}")
    with caplog.at_level("INFO", logger="gan_rl.cli.data"):
        rows = load_raw_splits(recipe_for({"url": url}, tmp_path))["train"]
    assert len(rows) == 64 and rows[0] == quickstart_texts(64)[0]
    assert cache_files(cache) == [cached_path(url)]  # one file, under the URL's own name
    assert cached_path(url).name == f"data.{kind}"
    assert any("downloaded" in r.message and url in r.message for r in caplog.records)
    server.stop()  # the second load cannot reach it: the cached copy is read
    again = load_raw_splits(recipe_for({"url": url}, tmp_path))["train"]
    assert again[:] == rows[:]
    assert server.requests == [f"/data.{kind}"]


def test_path_that_is_a_url_is_downloaded(server, tmp_path):
    url = server.url("data.jsonl")
    recipe = recipe_for(url, tmp_path, test={"path": url})  # the string form and the mapping form
    splits = load_raw_splits(recipe)
    assert len(splits["train"]) == 64 and len(splits["test"]) == 64
    assert server.requests == ["/data.jsonl"]  # the test split read the copy the train split fetched


def test_local_path_wins_over_the_url(server, cache, tmp_path):
    (tmp_path / "local.jsonl").write_text(json.dumps({"topic": "t", "post": "mine"}) + "\n")
    recipe = recipe_for({"path": "local.jsonl", "url": server.url("data.parquet")}, tmp_path)
    assert load_raw_splits(recipe)["train"]["post"] == ["mine"]
    assert server.requests == [] and cache_files(cache) == []


def test_missing_local_path_falls_back_on_the_url(server, tmp_path):
    recipe = recipe_for({"path": "absent.parquet", "url": server.url("data.parquet")}, tmp_path)
    assert len(load_raw_splits(recipe)["train"]) == 64


def test_set_path_overrides_a_recipe_with_a_url(server, tmp_path, recipe_factory, data_files):
    from click.testing import CliRunner

    from gan_rl.cli.main import main

    path = recipe_factory(data={"train": {"path": "absent.parquet", "url": server.url("nothing.parquet")}})
    result = CliRunner().invoke(main, ["check", str(path), "--set", f"data.train.path={data_files['csv']}"])
    assert result.exit_code == 0, result.output
    assert "train: 64 rows" in result.output and server.requests == []


def test_check_downloads_and_counts_the_rows(server, cache, recipe_factory):
    from click.testing import CliRunner

    from gan_rl.cli.main import main

    url = server.url("data.parquet")
    path = recipe_factory(data={"train": {"path": "absent.parquet", "url": url}})
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "train: 64 rows" in result.output and cached_path(url).is_file()


def test_404_without_local_file_is_one_line(server, cache, tmp_path, recipe_factory):
    url = server.url("missing.parquet")
    path = recipe_factory(data={"train": {"path": "absent.parquet", "url": url}})
    line = error_line("check", str(path))
    local = tmp_path / "absent.parquet"
    assert line.startswith("error: data.train: file not found locally at "), line
    assert str(local) in line and url in line and "data.train.url" in line
    assert "HTTP 404" in line and f"put a copy at {local}" in line
    assert cache_files(cache) == []


def test_unreachable_url_is_one_line(server, cache, recipe_factory):
    url = server.url("data.parquet")
    server.stop()  # nothing listens on the port any more
    line = error_line("check", str(recipe_factory(data={"train": {"url": url}})))
    assert line.startswith(f"error: data.train.url: cannot download {url}: "), line
    assert "refused" in line
    assert f"put a copy at {cached_path(url)}" in line and "data.train.path" in line
    assert cache_files(cache) == []


def test_contrast_source_downloads_too(server, tmp_path, recipe_factory):
    url = server.url("data.parquet")
    raw = yaml.safe_load(recipe_factory().read_text())
    raw["evaluate"] = {"contrast": {"train": {"url": url}, "test": url}}
    recipe = parse_recipe(raw, base_dir=tmp_path)
    assert len(load_contrast(recipe, "train", recipe.evaluate.contrast.train)) == 64
    assert len(load_contrast(recipe, "test", recipe.evaluate.contrast.test)) == 64
    server.stop()
    url_missing = server.url("gone.parquet")
    raw["evaluate"]["contrast"]["test"] = url_missing
    path = tmp_path / "contrast.yaml"
    path.write_text(yaml.safe_dump(raw))
    line = error_line("check", str(path))
    assert line.startswith(f"error: evaluate.contrast.test.path: cannot download {url_missing}"), line


@pytest.mark.parametrize(
    ("name", "expected"),
    [("bad.parquet", "cannot read {file} as parquet"), ("bad.jsonl", "{file}:2: not valid JSON")],
)
def test_corrupt_download_is_the_corrupt_file_error(name, expected, server, cache, tmp_path, recipe_factory):
    (tmp_path / f"local-{name}").write_bytes((server.root / name).read_bytes())
    local_line = error_line("check", str(recipe_factory(data={"train": f"local-{name}"})))
    url = server.url(name)
    line = error_line("check", str(recipe_factory(data={"train": {"url": url}})))
    assert local_line.startswith(
        "error: data.train.path: " + expected.format(file=tmp_path / f"local-{name}")
    )
    assert line.startswith("error: data.train.url: " + expected.format(file=cached_path(url))), line
    assert url in line and "the next run downloads it again" in line
    assert cache_files(cache) == []  # a bad download is not kept


def test_incomplete_download_leaves_nothing_in_the_cache(server, cache, tmp_path):
    url = server.url("truncated/data.parquet")
    with pytest.raises(RecipeError, match=r"data.train.url: cannot download .*incomplete transfer"):
        load_raw_splits(recipe_for({"url": url}, tmp_path))
    assert cache_files(cache) == []


def test_failed_download_removes_its_temporary_file(server, cache, monkeypatch):
    import gan_rl.cli.downloads as downloads

    def interrupted(url, out, timeout):
        out.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(downloads, "_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch(server.url("data.parquet"))
    assert cache_files(cache) == []


def test_unsupported_url_suffix_is_refused_before_downloading(server, tmp_path):
    with pytest.raises(RecipeError, match=r"data.train.url: unsupported file type '.txt'"):
        load_raw_splits(recipe_for({"url": server.url("data.txt")}, tmp_path))
    assert server.requests == []


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({"url": "ftp://example.org/d.parquet"}, "data.train.url: expected an http:// or https:// URL"),
        ({"url": "d.parquet"}, "data.train.url: expected an http:// or https:// URL"),
        ({"hub": "a/b", "url": "https://example.org/d.parquet"}, "data.train: give exactly one of"),
        (
            {"path": "https://example.org/a.parquet", "url": "https://example.org/b.parquet"},
            "data.train.path: a URL, and 'url' is given too",
        ),
    ],
)
def test_bad_url_sources_are_refused_when_parsed(train, expected, tmp_path):
    with pytest.raises(RecipeError, match=expected):
        recipe_for(train, tmp_path)


# The original experiment's repository at the commit the shipped recipes pin (its files never change).
PUBLISHED = (
    "https://raw.githubusercontent.com/simon-muenker/LLM-Reinforcement-GAN/"
    "6d9467c2199094b8a2c6b5b0c65ee70d133e6b73/experiments/twon/data/"
)
TWON_FILES = ("right.train", "right.test", "left.train", "left.test")


def test_shipped_twon_recipes_fall_back_on_the_published_files(tmp_path, data_files, cache):
    # Copied away from ../../shared, the recipes have no local copy: each source reads its URL's cached
    # copy, which this test puts there itself (so nothing is downloaded), with the recipe's checksums
    # replaced by those stand-ins' (the real files' are checked below).
    import pandas as pd

    frame = pd.DataFrame([{"annotation": r["topic"], "full_text": r["post"]} for r in quickstart_texts(64)])
    for name in TWON_FILES:
        target = cached_path(f"{PUBLISHED}{name}.parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target)
    stand_in = file_sha256(cached_path(f"{PUBLISHED}right.train.parquet"))
    for recipe_name in ("twon.yaml", "smollm2-twon.yaml"):
        (tmp_path / "recipes").mkdir(exist_ok=True)
        copy = tmp_path / "recipes" / recipe_name
        text = (ROOT / "recipes" / recipe_name).read_text()
        copy.write_text(re.sub(r"sha256: [0-9a-f]{64}", f"sha256: {stand_in}", text))
        recipe = load_recipe(copy)
        published = PUBLISHED
        for source in (recipe.data.train, recipe.data.test, *vars(recipe.evaluate.contrast).values()):
            assert source.path.startswith("../../shared/data/twon/") and source.url.startswith(published)
        splits = load_raw_splits(recipe)
        assert len(splits["train"]) == 64 and len(splits["test"]) == 64
        assert len(load_contrast(recipe, "test", recipe.evaluate.contrast.test)) == 64


@pytest.mark.skipif(not TWON_DIR.is_dir(), reason=f"the TWON data is not in {TWON_DIR}")
def test_shipped_twon_checksums_are_the_published_files():
    """Each TWON source of the shipped recipes names the pinned commit and the SHA-256 of the file there
    (the copy in ../shared/data/twon is that file)."""
    for recipe_name in ("twon.yaml", "smollm2-twon.yaml"):
        recipe = load_recipe(ROOT / "recipes" / recipe_name)
        sources = (recipe.data.train, recipe.data.test, *vars(recipe.evaluate.contrast).values())
        for source in sources:
            name = Path(source.path).name
            assert source.url == PUBLISHED + name
            assert source.sha256 == file_sha256(TWON_DIR / name), (recipe_name, name)


def test_checksum_accepts_the_right_bytes_and_refuses_others(server, cache, tmp_path, recipe_factory):
    url = server.url("data.parquet")
    right = file_sha256(server.root / "data.parquet")
    assert len(load_raw_splits(recipe_for({"url": url, "sha256": right.upper()}, tmp_path))["train"]) == 64
    shutil.rmtree(cache)
    wrong = "0" * 64
    line = error_line("check", str(recipe_factory(data={"train": {"url": url, "sha256": wrong}})))
    assert line.startswith(
        f"error: data.train.sha256: the file downloaded from {url} has SHA-256 {right}, "
    ), line
    assert f"not {wrong}" in line and "nothing was kept" in line
    assert cache_files(cache) == []


def test_a_cached_copy_with_other_bytes_is_downloaded_again(server, cache, tmp_path):
    url = server.url("data.parquet")
    right = file_sha256(server.root / "data.parquet")
    recipe = recipe_for({"url": url, "sha256": right}, tmp_path)
    load_raw_splits(recipe)
    cached_path(url).write_bytes(b"PAR1 changed on disk")
    assert len(load_raw_splits(recipe)["train"]) == 64  # fetched again, not the changed copy
    assert server.requests == ["/data.parquet", "/data.parquet"]
    assert file_sha256(cached_path(url)) == right
    load_raw_splits(recipe)  # a matching copy is read as it is
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (
            {"url": "https://example.org/d.parquet", "sha256": "abc"},
            "data.train.sha256: expected 64 hexadecimal",
        ),
        ({"path": "d.parquet", "sha256": "0" * 64}, "data.train.sha256: the checksum of the file downloaded"),
        ({"hub": "a/b", "sha256": "0" * 64}, "data.train.sha256: the checksum of the file downloaded"),
    ],
)
def test_bad_checksums_are_refused_when_parsed(train, expected, tmp_path):
    with pytest.raises(RecipeError, match=expected):
        recipe_for(train, tmp_path)
