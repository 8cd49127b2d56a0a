"""The released KAT weights: their timm pretrained cfgs, download from the official locations, SHA-256 check.

Six checkpoints were released with the paper (plain state dicts with the key names of
:mod:`kat_backbones.models.kat`, so timm's own loader reads them). They are timm pretrained tags on the KAT names::

    kat_{tiny,small,base}_patch16_224.in1k         trained from scratch on ImageNet-1k (the default tag)
    kat_{tiny,small,base}_patch16_224.vitft_in1k   initialised from a ViT (AugReg in21k->in1k), trained on ImageNet-1k

``timm.create_model('kat_tiny_patch16_224', pretrained=True)`` downloads the file from the official Hugging Face
location (falling back to the GitHub release asset), into timm's / torch.hub's checkpoint cache
(``$TORCH_HOME/hub/checkpoints``, or ``cache_dir=``), and checks its SHA-256 against the 64-hex string in its name
(timm's clean-checkpoint naming; a cached file is checked on every load). timm then loads it as usual
(``num_classes`` changes reset the head, ``img_size`` changes resample the position embedding, ``in_chans`` adapts
the patch embedding).

Without network access, either pass the file (downloaded by hand from the URLs in :data:`RELEASED_WEIGHTS`)::

    timm.create_model('kat_tiny_patch16_224', pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/FILE.pth'))

or put it, keeping its name, in the cache directory printed by the error. Skipping the SHA-256 check (e.g. for a
re-saved file that keeps the official name): ``check_hash=False`` in ``timm.create_model`` or the environment
variable ``KAT_BACKBONES_CHECK_HASH=0``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "RELEASED_WEIGHTS",
    "ReleasedWeights",
    "PretrainedDownloadError",
    "PretrainedHashError",
    "released_pretrained_cfgs",
    "fetch_pretrained_file",
    "file_sha256",
    "resolve_pretrained_file",
]

HF_BASE_URL = "https://huggingface.co/adamdad/kat_pretained/resolve/main/"  # the repository is spelled so
GITHUB_BASE_URL = "https://github.com/Adamdad/kat/releases/download/checkpoint/"
CHECK_HASH_ENV = "KAT_BACKBONES_CHECK_HASH"
DOWNLOAD_TIMEOUT_S = 15.0  # per connection attempt and per read; offline, name resolution fails at once

_SHA256_IN_NAME = re.compile(r"[-_]([0-9a-f]{64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class ReleasedWeights:
    """One released checkpoint.

    Attributes:
        model: the registered timm name it belongs to.
        tag: the timm pretrained tag.
        filename: the file name at the official locations (its 64-hex string is the SHA-256).
        top1: ImageNet-1k top-1 reported for it (224 px, crop 0.875).
        hf_hub_id: the Hugging Face hub id of the official release.
        origin: how it was trained.
    """

    model: str
    tag: str
    filename: str
    top1: float
    hf_hub_id: str
    origin: str

    @property
    def name(self) -> str:
        """``model.tag``, as passed to ``timm.create_model``."""
        return f"{self.model}.{self.tag}"

    @property
    def sha256(self) -> str:
        return sha256_in_name(self.filename)  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return HF_BASE_URL + self.filename

    @property
    def mirror_url(self) -> str:
        return GITHUB_BASE_URL + self.filename


_SCRATCH = "ImageNet-1k from scratch, 300 epochs (act2 initialised as swish)"
_VITFT = "ImageNet-1k, initialised from the AugReg ViT (in21k -> in1k) of the same size, 300 epochs"

#: The six released checkpoints (the official timm cfgs' mapping; the official README swaps the KAT-T and KAT-S
#: download links of the scratch models).
RELEASED_WEIGHTS: tuple[ReleasedWeights, ...] = (
    ReleasedWeights(
        "kat_tiny_patch16_224", "in1k",
        "kat_tiny_patch16_224_1f3ad3b2e69821f3d412f2924cf159a0e266f142d739cb68f68f796f5a0fe289.pth",
        74.6, "adamdad/kat_tiny_patch16_224", _SCRATCH),
    ReleasedWeights(
        "kat_small_patch16_224", "in1k",
        "kat_small_patch16_224_32487885cf13d2c14e461c9016fac8ad43f7c769171f132530941e930aeb5fe2.pth",
        81.2, "adamdad/kat_small_patch16_224", _SCRATCH),
    ReleasedWeights(
        "kat_base_patch16_224", "in1k",
        "kat_base_patch16_224_abff874d925d756d15cde97303f772a3460ddbd44b9c53fb9ce5cf15be230fb6.pth",
        82.3, "adamdad/kat_base_patch16_224", _SCRATCH),
    ReleasedWeights(
        "kat_tiny_patch16_224", "vitft_in1k",
        "kat_tiny_patch16_224-finetune_64f124d003803e4a7e1aba1ba23500ace359b544e8a5f0110993f25052e402fb.pth",
        75.7, "adamdad/kat_tiny_patch16_224.vitft", _VITFT),
    ReleasedWeights(
        "kat_small_patch16_224", "vitft_in1k",
        "kat_small_patch_224-finetune_3ae087a4c28e2993468eb377d5151350c52c80b2a70cc48ceec63d1328ba58e0.pth",
        82.0, "adamdad/kat_small_patch16_224.vitft", _VITFT),
    ReleasedWeights(
        "kat_base_patch16_224", "vitft_in1k",
        "kat_base_patch16_224-finetune_440bf1ead9dd8ecab642078cfb60ae542f1fa33ca65517260501e02c011e38f2.pth",
        82.8, "adamdad/kat_base_patch16_224.vitft", _VITFT),
)


class PretrainedDownloadError(RuntimeError):
    """The released weights could not be downloaded (e.g. no network)."""


class PretrainedHashError(RuntimeError):
    """A weights file's SHA-256 differs from the one in its name."""


def sha256_in_name(path: str | os.PathLike) -> str | None:
    """The 64-hex SHA-256 at the end of a file name (``NAME_<sha256>.pth`` / ``NAME-<sha256>.pth``), or None."""
    match = _SHA256_IN_NAME.search(os.path.basename(os.fspath(path)))
    return match.group(1) if match else None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_check_enabled(check_hash: bool | None) -> bool:
    if check_hash is not None:
        return bool(check_hash)
    return os.environ.get(CHECK_HASH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def verify_sha256(path: str | os.PathLike, expected: str, source: str | None = None) -> None:
    """Raises :class:`PretrainedHashError` (naming both values and how to skip the check) on a mismatch."""
    actual = file_sha256(path)
    if actual != expected:
        origin = f" (downloaded from {source})" if source else ""
        raise PretrainedHashError(
            f"SHA-256 mismatch for {os.fspath(path)}{origin}: the file hashes to {actual}, but its name says "
            f"{expected}. The file is incomplete or corrupt (delete it and retry) or not the released checkpoint. "
            f"To load it anyway, skip the check: timm.create_model(..., check_hash=False) or set the environment "
            f"variable {CHECK_HASH_ENV}=0."
        )


def _download(url: str, dst: str, expected_sha256: str | None, timeout: float) -> None:
    """Streams ``url`` into ``dst`` through a temporary file in the same directory (atomic rename at the end), so
    an interrupted or refused download never leaves a file under the final name.

    Written here rather than with ``torch.hub.download_url_to_file`` because that has no timeout (a blocked network
    would hang it) and timm's hash check only reads a hash prefix after a ``-``, which four of the six released
    names do not have.
    """
    directory = os.path.dirname(dst) or "."
    os.makedirs(directory, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "kat_backbones"})
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=directory)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            raise PretrainedHashError(
                f"SHA-256 mismatch for {url}: the download hashes to {digest.hexdigest()}, but its name says "
                f"{expected_sha256} (the file was not kept). Retry; if the official file itself changed, download "
                f"it by hand and load it with pretrained_cfg_overlay=dict(file=...) and check_hash=False (or "
                f"{CHECK_HASH_ENV}=0)."
            )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in (
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch_pretrained_file(
    urls: list[str] | tuple[str, ...],
    cache_dir: str | os.PathLike | None = None,
    check_hash: bool | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    model_name: str = "NAME",
) -> str:
    """The cached copy of a weights file, downloaded from the first of ``urls`` that answers.

    All URLs name the same file. The cache is timm's (``<torch hub dir>/checkpoints``) unless ``cache_dir`` is given.
    A file whose name ends in a 64-hex SHA-256 is checked against it after download and whenever it is taken from
    the cache. ``HF_HUB_OFFLINE=1`` forbids downloading. ``model_name`` is the timm name the error message suggests.

    Raises:
        PretrainedDownloadError: No URL could be downloaded; the message names the URLs, the errors, and how to load
            a local file instead.
        PretrainedHashError: The file's SHA-256 differs from its name (see :func:`verify_sha256`).
    """
    from timm.models._hub import get_cache_dir

    if not urls:
        raise ValueError("fetch_pretrained_file: urls must name at least one URL")
    filename = os.path.basename(urllib.request.urlparse(urls[0]).path)
    cache = os.fspath(cache_dir) if cache_dir else get_cache_dir()
    cached = os.path.join(cache, filename)
    expected = sha256_in_name(filename) if _hash_check_enabled(check_hash) else None
    if os.path.isfile(cached):
        if expected is not None:
            verify_sha256(cached, expected)
        return cached
    errors = []
    if _offline():
        errors.append("HF_HUB_OFFLINE is set: downloads are disabled")
    else:
        for url in urls:
            start = time.monotonic()
            try:
                _download(url, cached, expected, timeout)
                return cached
            except PretrainedHashError:
                raise
            except (urllib.error.URLError, OSError, ValueError) as err:  # no network, HTTP errors, timeouts
                errors.append(f"{url}: {type(err).__name__}: {err} (after {time.monotonic() - start:.1f} s)")
    tried = "\n  ".join(errors)
    raise PretrainedDownloadError(
        f"could not download the pretrained weights {filename}:\n  {tried}\n"
        f"Download the file yourself from {' or '.join(urls)} and either pass it: "
        f"timm.create_model({model_name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/{filename}')), "
        f"or put it under this name in the checkpoint cache {cache} (set TORCH_HOME to move the cache). In an "
        f"OpenMMLab config, give the file as the backbone's init_cfg checkpoint: --cfg-options "
        f"model.backbone.init_cfg.checkpoint=/path/to/{filename}"
    )


def released_pretrained_cfgs(base_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """timm ``default_cfgs`` entries (``'model.tag': cfg``) of the released weights, built on ``base_cfg``."""
    cfgs = {}
    for w in RELEASED_WEIGHTS:
        cfgs[w.name] = {
            **base_cfg,
            "url": w.url,
            "hf_hub_id": w.hf_hub_id,
            "license": "mit",  # the official repository's license
            "origin_url": "https://github.com/Adamdad/kat",
            "paper_name": "Kolmogorov-Arnold Transformer",
            "paper_ids": "arXiv:2409.10594",
            "description": f"{w.origin}; ImageNet-1k top-1 {w.top1}",
            "notes": (f"GitHub release mirror: {w.mirror_url}", f"SHA-256 {w.sha256}"),
        }
    return cfgs


def _mirrors(url: str) -> list[str]:
    """The official URL first, then the GitHub release asset of the same file; any other URL alone."""
    if url.startswith(HF_BASE_URL):
        return [url, GITHUB_BASE_URL + url[len(HF_BASE_URL):]]
    return [url]


def resolve_pretrained_file(
    cfg: Mapping[str, Any], cache_dir: str | os.PathLike | None = None, check_hash: bool | None = None
) -> str | None:
    """The local file timm should load for the resolved pretrained cfg ``cfg`` (a dict), or None to leave the
    source to timm (an in-memory ``state_dict``, an explicit ``source='hf-hub'`` or ``'local-dir'``).

    A ``file`` is returned as is, after the SHA-256 check if its name carries one; a ``url`` is fetched with
    :func:`fetch_pretrained_file` (official location, then the GitHub release mirror).

    Raises:
        RuntimeError: The cfg has no weights (naming the tags that have).
        FileNotFoundError: ``file`` does not exist.
        PretrainedDownloadError, PretrainedHashError: See :func:`fetch_pretrained_file`.
    """
    if cfg.get("state_dict") is not None or cfg.get("source") in ("hf-hub", "local-dir"):
        return None
    file = cfg.get("file")
    if file:
        file = os.fspath(file)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"pretrained_cfg file={file!r} does not exist")
        expected = sha256_in_name(file)
        if expected is not None and _hash_check_enabled(check_hash):
            verify_sha256(file, expected)
        return file
    url = cfg.get("url")
    if not url:
        released = ", ".join(w.name for w in RELEASED_WEIGHTS)
        name = cfg.get("architecture") or "this model"
        tag = f".{cfg['tag']}" if cfg.get("tag") else ""
        raise RuntimeError(
            f"no released weights for {name}{tag}; released KAT weights: {released}. For a local file use "
            "pretrained_cfg_overlay=dict(file=PATH)."
        )
    name = cfg.get("architecture") or "NAME"
    name = f"{name}.{cfg['tag']}" if cfg.get("tag") else name
    return fetch_pretrained_file(_mirrors(url), cache_dir=cache_dir, check_hash=check_hash, model_name=name)
