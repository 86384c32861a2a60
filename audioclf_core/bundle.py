"""Model bundles: a Keras model and the contract it was trained under.

A bundle is a directory (or a ``.zip`` / ``.tar.gz`` of one) holding
``model.keras`` and ``manifest.json``. The manifest owns everything a caller
would otherwise hard-code: labels, sample rate, window and hop, feature and
silence parameters, provenance, evaluation figures, and the SHA-256 of the
weights file, which loading verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import BundleError, ParameterError
from .features import FeatureExtractor
from .params import FeatureParams, Pooling, SilenceParams
from .storage import is_url

MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
LITERT_FILE = "model.tflite"  # optional: the weights converted to LiteRT, checked against Keras
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).with_name("bundles")
DEFAULT_MODEL = "speech-music-noise"
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # a label names a result column


class Manifest(BaseModel):
    """What ``manifest.json`` holds; validated on load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    trained: bool
    labels: tuple[str, ...]
    sample_rate: int = Field(ge=1000, le=384_000)
    window_s: float = Field(gt=0, le=60)
    hop_s: float = Field(gt=0, le=60)
    features: FeatureParams
    silence: SilenceParams = SilenceParams()
    # Bundles written before this field existed averaged their windows: "mean" keeps their figures.
    pooling: Pooling = "mean"
    architecture: str = ""
    provenance: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    litert_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    created_at: str = ""

    @field_validator("format")
    @classmethod
    def _format(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"bundle format {v} is not supported (this audioclf reads format {FORMAT_VERSION})")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError(f"a classifier needs at least two labels, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"labels repeat: {list(v)}")
        bad = [x for x in v if not LABEL_RE.match(x)]
        if bad:
            raise ValueError(f"labels must be lowercase letters, digits and _ (they name columns): {bad}")
        return v

    @model_validator(mode="after")
    def _contract(self) -> "Manifest":
        win, hop = self.window_s * self.sample_rate, self.hop_s * self.sample_rate
        if abs(win - round(win)) > 1e-6 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(f"window_s={self.window_s} and hop_s={self.hop_s} must be whole samples at {self.sample_rate} Hz")
        if round(hop) % self.features.hop_length:
            raise ValueError(f"hop_s={self.hop_s} is not a whole number of feature hops ({self.features.hop_length} samples)")
        if round(win) < self.features.n_fft:
            raise ValueError(f"window_s={self.window_s} is shorter than one FFT ({self.features.n_fft} samples)")
        fmax = self.features.fmax
        if fmax is not None and fmax > self.sample_rate / 2:
            raise ValueError(f"features.fmax={fmax} is above the Nyquist frequency of {self.sample_rate} Hz")
        return self


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on local disk.

    The Keras model is loaded on first use of :attr:`model` (TensorFlow is
    imported then, not before).
    """

    path: Path
    manifest: Manifest
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def sample_rate(self) -> int:
        return self.manifest.sample_rate

    @property
    def window_samples(self) -> int:
        return int(round(self.manifest.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.manifest.hop_s * self.sample_rate))

    @property
    def pooling(self) -> str:
        """How segment probabilities pool window probabilities ("mean" or "energy")."""
        return self.manifest.pooling

    @cached_property
    def features(self) -> FeatureExtractor:
        return FeatureExtractor(self.manifest.features, sr=self.sample_rate)

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(frames, features)`` of one model window."""
        return (self.features.n_frames(self.window_samples), self.features.n_features)

    @property
    def litert_path(self) -> Path | None:
        """The bundle's own LiteRT flatbuffer (hash checked on load), or None."""
        if self.manifest.litert_sha256 is None:
            return None
        return self.path / LITERT_FILE

    @property
    def model(self):
        """The Keras model, loaded once and checked against the manifest."""
        if "model" not in self._cache:
            from .model import load_keras_model

            self._cache["model"] = load_keras_model(
                self.path / MODEL_FILE, input_shape=self.input_shape, n_labels=len(self.labels)
            )
        return self._cache["model"]


def _read_manifest(folder: Path, *, where: str) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{where} is not a model bundle: no {MANIFEST}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON ({exc})") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise BundleError(f"{where}: invalid {MANIFEST}: {problems}") from None
    except BundleError:
        raise
    except Exception as exc:  # parameter models raise their own error type
        raise BundleError(f"{where}: invalid {MANIFEST}: {exc}") from None


def shipped_bundles() -> list[str]:
    """Names of the bundles shipped inside the package."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / MANIFEST).is_file()) if SHIPPED_DIR.is_dir() else []


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _extract(archive: Path, *, where: str) -> Path:
    """Unpack an archive once into a cache folder keyed by its hash."""
    digest = file_sha256(archive)[:16]
    cache = Path(tempfile.gettempdir()) / "audioclf-bundles" / digest
    if (cache / MANIFEST).is_file():
        return cache
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache.parent if cache.parent.exists() else None))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        elif archive.name.lower().endswith(_ARCHIVE_SUFFIXES):
            raise BundleError(f"{where}: cannot unpack (not a whole .zip or .tar archive: damaged or cut short)")
        else:
            raise BundleError(f"{where} is neither a bundle folder nor a .zip/.tar.gz archive")
        # Accept an archive of the folder itself or of its contents.
        roots = [p for p in [tmp, *tmp.iterdir()] if (p / MANIFEST).is_file()]
        if not roots:
            raise BundleError(f"{where}: archive holds no {MANIFEST}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.move(str(roots[0]), cache)
        return cache
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
        # A .tar.gz cut short raises EOFError ("Compressed file ended before the end-of-stream marker")
        raise BundleError(f"{where}: cannot unpack ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(ref: str, storage_options: Mapping | None) -> Path:
    """Copy a remote bundle (folder or archive) to a local cache."""
    import fsspec

    target: Path | None = None
    try:
        fs, path = fsspec.core.url_to_fs(ref, **dict(storage_options or {}))
        target = Path(tempfile.mkdtemp(prefix="audioclf-bundle-"))
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(target), recursive=True)
            return target
        local = target / Path(path).name
        fs.get(path, str(local))
        return local
    except Exception as exc:  # unknown protocol, missing driver, bad URL, storage errors: all one line
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, FileNotFoundError):
            raise BundleError(f"no model bundle at {ref}") from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"cannot fetch model bundle {ref}: {reason}") from None


def load_bundle(ref: str | Path, *, storage_options: Mapping | None = None, verify: bool = True) -> Bundle:
    """Find, unpack and validate a bundle.

    Parameters
    ----------
    ref : str or Path
        A shipped bundle's name (see :func:`shipped_bundles`), a local folder
        or archive, or any fsspec URL to one (``s3://models/smn-2.zip``).
    verify : bool
        Check the weights against the manifest's SHA-256.
    """
    where = str(ref)
    if isinstance(ref, str) and not ref.strip():
        raise BundleError("no model bundle named: give a shipped bundle's name, a bundle folder or archive, or a URL")
    if isinstance(ref, str) and (SHIPPED_DIR / ref / MANIFEST).is_file():
        folder = SHIPPED_DIR / ref
    elif isinstance(ref, str) and is_url(ref):
        folder = _fetch(ref, storage_options)
    else:
        folder = Path(str(ref).removeprefix("file://")).expanduser()
        if not folder.exists():
            known = ", ".join(shipped_bundles()) or "none"
            raise BundleError(f"no model bundle {where!r}: not a path, and not a shipped bundle (shipped: {known})")
    if folder.is_file():
        folder = _extract(folder, where=where)
    manifest = _read_manifest(folder, where=where)
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise BundleError(f"{where}: bundle has no {MODEL_FILE}")
    checks = [(weights, manifest.sha256)]
    if manifest.litert_sha256 is not None:
        if not (folder / LITERT_FILE).is_file():
            raise BundleError(f"{where}: manifest lists {LITERT_FILE} but the bundle has none")
        checks.append((folder / LITERT_FILE, manifest.litert_sha256))
    for path, want in checks if verify else ():
        actual = file_sha256(path)
        if actual != want:
            raise BundleError(
                f"{where}: {path.name} does not match its manifest (sha256 {actual[:12]}…, manifest says {want[:12]}…)"
            )
    return Bundle(path=folder, manifest=manifest)


def refuse_existing(folder: Path, *, hint: str = "") -> None:
    """Raise :class:`BundleError` if ``folder`` already holds a bundle: versions are kept, never replaced."""
    if (folder / MANIFEST).exists() or (folder / MODEL_FILE).exists():
        raise BundleError(f"{folder} already holds a bundle; bundles are never overwritten{hint}")


# A version starts with a number: 1.4.0, 2, 1.5.0-rc1, 1.0.0+local.
VERSION_RE = re.compile(r"\d+(\.\d+)*[0-9A-Za-z.+-]*")


def check_new_bundle(folder: str | Path, *, version: str | None = None, hint: str = "") -> Path:
    """Check, before any work, that a new bundle can be written to ``folder`` as ``version``.

    Raises
    ------
    BundleError
        ``folder`` already holds a bundle (see :func:`refuse_existing`).
    ParameterError
        ``version`` does not start with a number (``1.4.0``, ``2``, ``1.5.0-rc1``).
    OutputError
        ``folder`` cannot be made or written (see :func:`~audioclf_core.storage.check_local_folder`).
    """
    from .storage import check_local_folder

    folder = Path(folder).expanduser()
    refuse_existing(folder, hint=hint)
    if version is not None and not VERSION_RE.fullmatch(str(version)):
        raise ParameterError(f"version {version!r} is not a version: use numbers and dots, e.g. 1.2.0")
    return check_local_folder(folder, what="bundle folder")


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` through a temporary file, so no reader sees half of one."""
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def save_bundle(model, folder: str | Path, *, litert: bool = True, **manifest_fields: Any) -> Bundle:
    """Write a Keras model and its manifest as a new bundle folder.

    With ``litert`` the weights are also converted to ``model.tflite`` (checked
    against Keras; skipped if the converter cannot take the model), so the
    bundle runs without TensorFlow.

    ``manifest_fields`` are :class:`Manifest` fields except ``sha256`` and
    ``created_at``, which are filled in here. Refuses to overwrite an existing
    bundle: versions are kept, never replaced.
    """
    folder = Path(folder)
    refuse_existing(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    fields = dict(manifest_fields)
    fields.pop("litert_sha256", None)  # derived from these weights below, never carried over from a parent
    fields["sha256"] = file_sha256(folder / MODEL_FILE)
    fields.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        manifest = Manifest.model_validate(fields)
    except ValidationError as exc:
        (folder / MODEL_FILE).unlink(missing_ok=True)
        raise BundleError(f"{folder}: invalid manifest: {exc}") from None
    write_manifest(folder, manifest)
    if litert:
        from .engines import attach_litert

        try:
            return attach_litert(folder)
        except BundleError:  # the converter cannot take this model: the Keras engine still serves it
            pass
    return load_bundle(folder)
