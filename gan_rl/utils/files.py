"""Whether a weights, optimizer or state file can be read, checked cheaply before anything loads it.

A file cut short (a full disk, a copy that stopped, ``truncate``) otherwise fails deep inside a loader,
with a message that names neither the file nor what to do: safetensors' ``SafetensorError: Error while
deserializing header``, torch's ``PytorchStreamReader failed reading zip archive``. The checks here read a
file's header or directory, not its tensors: a safetensors file's size against the offsets in its header,
a torch archive's zip directory against the file's size, a JSON file parsed.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

# A checkpoint's generator weights, in the order transformers prefers them (an index lists shards).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
)
# torch.save's archive format (since torch 1.6) is a zip file; an older pickle is not checked.
ZIP_MAGIC = b"PK\x03\x04"
# A zip entry's local header: 30 bytes before its name (and extra field) and data.
ZIP_LOCAL_HEADER = 30
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read, as the rest of a sentence that starts with the path ("is truncated
    (...)"), or None when it reads. Files of other kinds than safetensors, torch archives and JSON are
    only checked to exist."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    if path.name.endswith(".safetensors"):
        return _safetensors_problem(path, size)
    if path.suffix in TORCH_SUFFIXES:
        return _torch_problem(path, size)
    if path.suffix == ".json":
        return _json_problem(path)
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header and the tensors' bytes, which the
    header's ``data_offsets`` must cover exactly (safetensors refuses a file a byte longer or shorter)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, not even the 8 of its header's length)"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"is truncated or corrupt ({size} bytes; its header alone claims {length} bytes)"
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return "is corrupt (its header is not JSON)"
    if not isinstance(header, dict):
        return "is corrupt (its header is not a JSON object)"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"is corrupt (tensor {name!r} has no valid data_offsets in its header)"
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size < expected:
        return f"is truncated ({size} bytes of the {expected} its header promises)"
    if size > expected:
        return f"is corrupt ({size} bytes, {size - expected} more than its header describes)"
    return None


def _torch_problem(path: Path, size: int) -> str | None:
    """A torch archive is a zip file: its directory (at the end, so gone when the file is cut short) must
    be there, and each entry's data must lie within the file."""
    with path.open("rb") as f:
        magic = f.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        return None  # a legacy pickle: left to torch.load
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                end = info.header_offset + ZIP_LOCAL_HEADER + len(info.filename.encode()) + info.compress_size
                if end > size:
                    return f"is truncated ({size} bytes; its entry {info.filename} runs to byte {end})"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        return f"is truncated or corrupt (not a complete torch zip archive: {exc})"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return f"is truncated or corrupt (not valid JSON: {exc})"
    return None


def weight_files(folder: Path) -> list[Path]:
    """The generator weight files a loader reads from ``folder``: each of :data:`WEIGHT_FILES` there and,
    for a sharded checkpoint, its index's shards (a shard the index lists and the folder lacks is
    included: :func:`file_problem` calls it missing). An index that does not parse is included as it is."""
    files: list[Path] = []
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        files.append(path)
        if name.endswith(".index.json") and _json_problem(path) is None:
            index = json.loads(path.read_bytes())
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if isinstance(weight_map, dict):
                files += [folder / shard for shard in sorted(set(map(str, weight_map.values())))]
    return files


def unreadable(files: list[Path]) -> list[tuple[Path, str]]:
    """(file, what is wrong) for each of ``files`` that cannot be read (:func:`file_problem`)."""
    found = []
    for path in files:
        problem = file_problem(path)
        if problem is not None:
            found.append((path, problem))
    return found
