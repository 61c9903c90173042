"""Image paths given as URIs (`s3://bucket/photos`, `gs://...`, `hdfs://...`, `file:///...`): listing
and reading through `pyarrow.fs`, for `sixview scan --ray` (pyarrow comes with the `ray` extra).

A URI folder is listed recursively, keeping image names (`edge.inputs.is_image_name`); its shard keys
are the paths relative to it, as for a local folder. A URI names a folder or a file; globs are local
only. Credentials come from the usual places of each filesystem (S3: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
`~/.aws`, instance roles; GCS: `GOOGLE_APPLICATION_CREDENTIALS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .inputs import MAX_FILE_BYTES, FileMissing, InputError, collect_keyed, is_image_name, too_large

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether `path` names a file or folder by URI (scheme://...) rather than a local path."""
    return bool(_SCHEME.match(path))


_FILESYSTEMS: dict[tuple[str, str], tuple[Any, str]] = {}  # (scheme, authority) -> (filesystem, URI prefix)


def _resolve(uri: str) -> tuple[Any, str, str]:
    """(filesystem, its path for `uri`, the URI prefix before that path); one filesystem per
    process and bucket (or host), so that reading many files does not build one each time."""
    if "?" in uri:
        raise ValueError(f"URI options (?...) are not supported, use the environment: {uri}")
    scheme, rest = uri.split("://", 1)
    key = (scheme.lower(), rest.split("/", 1)[0])
    if key in _FILESYSTEMS:
        filesystem, prefix = _FILESYSTEMS[key]
        return filesystem, uri[len(prefix):], prefix
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    prefix = uri[:len(uri) - len(path)] if path and uri.endswith(path) else f"{scheme}://"
    _FILESYSTEMS[key] = (filesystem, prefix)
    return filesystem, path, prefix


def collect_uris(uris: Iterable[str]) -> dict[str, str]:
    """URI of each image -> shard key, from URI folders (recursive) and files, sorted, each once.
    Raises FileNotFoundError for a URI that matches nothing."""
    from pyarrow import fs

    found: dict[str, str] = {}
    for uri in uris:
        filesystem, path, prefix = _resolve(uri.rstrip("/") if not uri.endswith(":///") else uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.Directory:
            root = path.rstrip("/") + "/"
            for entry in filesystem.get_file_info(fs.FileSelector(path, recursive=True)):
                if entry.type == fs.FileType.File and is_image_name(entry.base_name):
                    found.setdefault(prefix + entry.path, entry.path[len(root):] if entry.path.startswith(root)
                                     else entry.base_name)
        elif info.type == fs.FileType.NotFound:
            raise FileNotFoundError(f"no such file or folder: {uri}")
        else:
            found.setdefault(prefix + path, info.base_name)  # named explicitly: try it even if unusual
    return dict(sorted(found.items()))


def collect_any(inputs: Iterable[str]) -> dict[str, str]:
    """`edge.inputs.collect_keyed` for local paths and globs, `collect_uris` for URIs; sorted by path."""
    inputs = list(inputs)
    local = [p for p in inputs if not is_uri(p)]
    found = collect_keyed(local) if local else {}
    remote = [p for p in inputs if is_uri(p)]
    if remote:
        found.update((p, k) for p, k in collect_uris(remote).items() if p not in found)
    return dict(sorted(found.items()))


def read_uri(uri: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes by URI; anything that is not a regular file, or over `max_bytes`, is refused."""
    from pyarrow import fs

    filesystem, path, _ = _resolve(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileMissing("cannot read: No such file or directory")
    if info.type != fs.FileType.File:
        raise InputError("not an image file: a folder" if info.type == fs.FileType.Directory
                         else "not an image file: not a regular file")
    if info.size is not None and info.size > max_bytes:
        raise too_large(info.size, max_bytes)
    with filesystem.open_input_stream(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(None, max_bytes)
    return bytes(data)
