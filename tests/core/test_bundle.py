"""Model bundles: validation, hashing, archives, custom layers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import fsspec
import numpy as np
import pytest

from audioclf_core.bundle import MANIFEST, MODEL_FILE, load_bundle, save_bundle, shipped_bundles
from audioclf_core.errors import BundleError


@pytest.fixture
def bundle_copy(tmp_path):
    src = load_bundle("placeholder").path
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(folder, **changes):
    data = json.loads((folder / MANIFEST).read_text())
    data.update(changes)
    (folder / MANIFEST).write_text(json.dumps(data))


def test_placeholder_ships_and_says_it_is_untrained():
    assert "placeholder" in shipped_bundles()
    b = load_bundle("placeholder")
    assert b.manifest.trained is False and "UNTRAINED" in b.manifest.description
    assert b.labels == ("speech", "music", "noise")
    assert b.model.input_shape[1:] == b.input_shape
    assert b.model.output_shape[-1] == 3


def test_weights_must_match_the_manifest_hash(bundle_copy):
    with open(bundle_copy / MODEL_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match its manifest"):
        load_bundle(bundle_copy)


FEATURES = load_bundle("placeholder").manifest.features.model_dump()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(labels=["speech", "speech"]), "labels repeat"),
        (dict(labels=["speech", "Music", "noise"]), "lowercase"),
        (dict(labels=["speech", "x y", "noise"]), "lowercase"),
        (dict(labels=["speech", "music!", "noise"]), "lowercase"),
        (dict(hop_s=0.50625), "feature hops"),  # 8100 samples: not a whole number of 160-sample hops
        (dict(window_s=0.03, hop_s=0.01), "shorter than one FFT"),  # 480 samples < n_fft 512
        (dict(features={**FEATURES, "fmax": 9000.0}), "Nyquist"),
        (dict(format=0), "format 0"),
        (dict(labels=["one"]), "at least two"),
        (dict(window_s=0.99991), "whole samples"),
        (dict(hop_s=0.3333), "whole samples"),
        (dict(format=9), "format 9"),
        (dict(colour="blue"), "colour"),
        (dict(sample_rate=100), "sample_rate"),
        (dict(pooling="max"), "pooling"),
    ],
)
def test_bad_manifests_are_refused_clearly(bundle_copy, change, message):
    _edit_manifest(bundle_copy, **change)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bundle_copy)
    assert str(bundle_copy) in str(err.value)


def test_manifest_that_disagrees_with_the_model(bundle_copy):
    _edit_manifest(bundle_copy, labels=["a", "b", "c", "d"])
    with pytest.raises(BundleError, match="3 outputs.*4 labels"):
        load_bundle(bundle_copy).model
    _edit_manifest(bundle_copy, labels=["a", "b", "c"], features={**load_bundle("placeholder").manifest.features.model_dump(), "n_mels": 40})
    with pytest.raises(BundleError, match=r"\(97, 64\).*\(97, 40\)"):
        load_bundle(bundle_copy).model


def test_broken_and_missing_bundles(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="shipped"):
        load_bundle("no-such-model")
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive")
    with pytest.raises(BundleError, match=r"cannot unpack \(not a whole .zip or .tar archive: damaged or cut short\)"):
        load_bundle(junk)  # named as an archive: a damaged one
    junk = junk.rename(tmp_path / "junk.bin")
    with pytest.raises(BundleError, match="neither a bundle folder nor"):
        load_bundle(junk)


def test_archives_and_remote_bundles(tmp_path):
    src = load_bundle("placeholder").path
    zpath = tmp_path / "p.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"placeholder/{f.name}")
    tpath = tmp_path / "p.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(src, arcname=".")
    fsspec.filesystem("memory").pipe("/models/p.zip", zpath.read_bytes())
    for ref in (zpath, tpath, "memory://models/p.zip"):
        b = load_bundle(str(ref))
        assert b.sha256 == load_bundle("placeholder").sha256
    with pytest.raises(BundleError, match="no model bundle at memory://models/none.zip"):
        load_bundle("memory://models/none.zip")


def test_an_archive_replaced_under_the_same_name_is_unpacked_again(tmp_path, monkeypatch):
    """Unpacked archives are cached by content: a new model.zip is never served from the old one's cache."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    src = load_bundle("placeholder").path

    def zip_as(version):
        folder = tmp_path / f"v{version}"
        shutil.copytree(src, folder)
        _edit_manifest(folder, version=version)
        with zipfile.ZipFile(tmp_path / "model.zip", "w") as zf:
            for f in folder.iterdir():
                zf.write(f, f.name)

    zip_as("1.0.0")
    assert load_bundle(str(tmp_path / "model.zip")).version == "1.0.0"
    zip_as("1.1.0")
    assert load_bundle(str(tmp_path / "model.zip")).version == "1.1.0"


def test_residual_bundle_round_trips_without_custom_objects(tmp_path):
    """Saved here, loaded in a fresh interpreter in safe mode: same numbers."""
    from audioclf_core.architectures import build_model

    src = load_bundle("placeholder").manifest
    model = build_model("resnet", load_bundle("placeholder").input_shape, 3, width=4)
    fields = src.model_dump(exclude={"sha256", "created_at"})
    fields.update(name="tiny-resnet", architecture="resnet")
    b = save_bundle(model, tmp_path / "resnet", **fields)
    x = np.random.default_rng(0).standard_normal((4, *b.input_shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = model(x, training=False).numpy()
    code = (
        "import sys, numpy as np\n"
        "from audioclf_core.bundle import load_bundle\n"
        "from audioclf_core.model import Predictor\n"
        f"b = load_bundle({str(tmp_path / 'resnet')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, Predictor(b.model)(np.load({str(tmp_path / 'x.npy')!r})))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
    with pytest.raises(BundleError, match="never overwritten"):
        save_bundle(model, tmp_path / "resnet", **fields)


@pytest.mark.parametrize("ref, reason", [
    ("foo://x.zip", "Protocol not known: foo"),
    ("memory://no/such/bundle.zip", "no model bundle at memory://no/such/bundle.zip"),
])
def test_a_url_that_cannot_be_fetched_is_one_bundle_error_and_leaves_no_temporary_folder(tmp_path, monkeypatch, ref, reason):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(BundleError) as info:
        load_bundle(ref)
    assert reason in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_only_weights_is_not_a_new_bundles_place(tmp_path):
    from audioclf_core.bundle import check_new_bundle

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / MODEL_FILE).write_bytes(b"weights of an unfinished save")
    with pytest.raises(BundleError, match="already holds a bundle"):
        check_new_bundle(tmp_path / "b", version="1.0.0")
