"""Data files fetched over http(s) once and then read from a local cache.

A recipe's data source may name a URL (``url:``, or a ``path:`` that is itself an http(s) URL) so that a
recipe runs on a fresh machine without a manual download; the file is fetched the first time and every
later run reads the cached copy, offline included. The cache is a plain folder, ``$GAN_RL_CACHE/data``
(``GAN_RL_CACHE`` defaults to ``$XDG_CACHE_HOME/gan-rl``, else ``~/.cache/gan-rl``): one sub-folder per
URL (the first 16 hex digits of its SHA-256), holding the file under the URL's own file name, so the
suffix (which picks the parser) and the name a message shows stay the URL's. Delete a file there to
fetch it again.

A source may name the file's SHA-256 (``sha256:``, as the shipped TWON recipes do beside a URL pinned to a
commit): a download whose bytes do not match is refused and not kept, and a cached copy that does not
match (changed on disk, or the recipe now names another file) is fetched again, so a recipe with a
checksum always reads the file it names.

The standard library's ``urllib`` does the transfer (no new dependency; the ``datasets`` / ``huggingface_hub``
download helpers would add their own cache layout, retries and progress bars for one plain GET). A download
is written to a temporary file beside its target and renamed onto it only when complete (``os.replace`` is
atomic on one file system), so an interrupted or failed transfer never leaves a half file that a later run
would take for the data; processes that download the same URL at once (``accelerate launch``) each write
their own temporary file and the last rename wins, with the same bytes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

CACHE_ENV = "GAN_RL_CACHE"


def _version() -> str:
    """gan-rl's installed version, for the User-Agent (the package root is above this layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gan-rl")
    except PackageNotFoundError:
        return "unknown"


# Seconds without an answer (connecting, or between two reads) before a download gives up: long enough for
# a slow link, short enough that an offline machine behind a firewall that drops packets is told soon.
TIMEOUT_S = 30.0
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not complete; the message is the reason in a few words (``HTTP 404 Not Found``,
    ``connection refused``), for the caller to put into its own one-line error."""


class ChecksumError(DownloadError):
    """A download that completed with other bytes than the SHA-256 it was expected to have."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"its SHA-256 is {got}, not the expected {expected}")
        self.expected, self.got = expected, got


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as ``sha256sum`` prints it (lowercase hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (what a data source downloads) rather than a local path."""
    scheme = urlparse(text.strip()).scheme.lower()
    return scheme in ("http", "https")


def url_file_name(url: str) -> str:
    """The file name at the end of the URL's path (query and fragment ignored, %-escapes decoded), or
    ``download`` when the path ends in ``/``. Its suffix decides how the file is parsed."""
    name = PurePosixPath(unquote(urlparse(url).path)).name
    # Only a plain name: no separators or control characters from a hostile URL reach the file system.
    name = "".join(c if c.isprintable() and c not in "/\\:" else "_" for c in name).strip(". ")
    return name or "download"


def cache_root() -> Path:
    """The gan-rl cache folder: ``$GAN_RL_CACHE``, else ``$XDG_CACHE_HOME/gan-rl``, else ``~/.cache/gan-rl``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gan-rl"


def cached_path(url: str) -> Path:
    """Where the download of ``url`` is (or will be) kept: ``CACHE/data/<sha256(url)[:16]>/<file name>``."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_root() / "data" / key / url_file_name(url)


def fetch(url: str, timeout: float = TIMEOUT_S, sha256: str | None = None) -> tuple[Path, bool]:
    """The local copy of ``url``: ``(path, downloaded)``, downloaded now (True) or found in the cache
    (False). Raises :class:`DownloadError` with a short reason when the transfer fails, and
    :class:`ChecksumError` when ``sha256`` is given and the downloaded bytes have another; nothing is left
    in the cache then. A cached copy with another SHA-256 than ``sha256`` is downloaded again."""
    target = cached_path(url)
    expected = sha256.lower() if sha256 is not None else None
    if target.is_file():
        if expected is None or file_sha256(target) == expected:
            return target, False
        target.unlink()  # not the file the caller names: fetched again below
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise DownloadError(
            f"cannot write the download cache {target.parent} ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a writable folder"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(url, out, timeout)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and (got := file_sha256(tmp)) != expected:
            raise ChecksumError(expected, got)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target, True


def _copy(url: str, out, timeout: float) -> None:
    """GET ``url`` into the open file ``out``, checking the length the server announced; every failure a
    :class:`DownloadError` with its reason."""
    request = urllib.request.Request(url, headers={"User-Agent": f"gan-rl/{_version()}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
            announced = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
            if announced is not None and announced.isdigit() and received != int(announced):
                raise DownloadError(f"incomplete transfer, {received} of {announced} bytes")
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} {exc.reason}".strip()) from None
    except urllib.error.URLError as exc:
        raise DownloadError(_reason(exc.reason, timeout)) from None
    except http.client.IncompleteRead as exc:
        raise DownloadError(
            f"incomplete transfer, {len(exc.partial)} bytes before the connection closed"
        ) from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise DownloadError(_reason(exc, timeout)) from None


def _reason(exc: object, timeout: float) -> str:
    """A network failure in a few words: ``connection refused``, ``no answer within 30 s``, ..."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})" if exc.strerror else "host not found"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
