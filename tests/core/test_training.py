"""Training and evaluation: a tiny real model on real clips, splits by group, honest reports."""

from __future__ import annotations

import json
from dataclasses import replace
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioclf_core.augment import AugmentParams, augment
from audioclf_core.bundle import MANIFEST, MODEL_FILE, file_sha256, load_bundle, save_bundle
from audioclf_core.errors import BundleError, OutputError, ParameterError
from audioclf_core.evaluation import (
    Evaluation, accuracy_intervals, confusion_matrix, evaluate_bundle, group_bootstrap_interval, group_counts,
    roc_auc_ovr, wilson_interval, write_report,
)
from audioclf_core import training
from audioclf_core.features import FeatureExtractor, mel_filterbank
from audioclf_core.training import (
    PRESETS,
    WindowSampler,
    build,
    class_weights,
    ensemble,
    repool,
    soup,
    train,
    validation_windows,
)

DATA = Path(__file__).parents[1] / "data"
SR = 8000
TEST_GROUPS = ["allison-prompts", "moh-reno", "noise-tones"]


def make_noise_clips(folder: Path) -> list[dict]:
    """Four noise clips made with numpy (the fixtures hold only speech and music)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(2.5 * SR)) / SR
    clips = {
        "hiss": (0.05 * rng.standard_normal(t.size), "noise-hiss"),
        "hum": (0.2 * sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 8)), "noise-hiss"),
        "ringback": (0.3 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * ((t % 1.0) < 0.6), "noise-tones"),
        "dtmf": (0.3 * (np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 1209 * t)) * ((t % 0.3) < 0.15), "noise-tones"),
    }
    (folder / "noise").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (y, group) in clips.items():
        path = folder / "noise" / f"{name}.wav"
        sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"path": str(path), "label": "noise", "group": group, "synthetic": 0})
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """tests/data's 6 speech and 2 music clips plus 4 numpy noise clips, with groups, as manifest.csv."""
    root = tmp_path_factory.mktemp("clips")
    labels = pd.read_csv(DATA / "labels.csv")
    rows = []
    for r in labels.itertuples():
        group = ("allison-digits" if "digits" in r.file else "allison-prompts") if r.label == "speech" else (
            "moh-reno" if "reno" in r.file else "moh-macroform")
        rows.append({"path": str(DATA / r.file), "label": r.label, "group": group, "synthetic": 0})
    rows += make_noise_clips(root)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A tiny CNN trained for one epoch; three groups held out."""
    out = tmp_path_factory.mktemp("bundles") / "smn-tiny"
    return train(dataset, out=out, arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1, batch_size=16,
                 max_windows_per_epoch=48, test_groups=TEST_GROUPS, val_fraction=0.0, seed=3, verbose=0, workers=1)


# -- the trained bundle ----------------------------------------------------------------


@pytest.mark.slow
def test_saved_bundle_predicts_what_the_trained_model_predicted(trained):
    from audioclf_core.model import Predictor
    from audioclf_core.pipeline import Classifier

    bundle = load_bundle(trained.bundle.path)
    y, sr = sf.read(DATA / "speech_en_transfer.wav", dtype="float32")
    assert sr == bundle.sample_rate == 8000
    x = bundle.features.windows(y, window=bundle.window_samples, hop=bundle.hop_samples)
    assert x.shape[1:] == bundle.input_shape == (97, 40)
    np.testing.assert_allclose(Predictor(bundle.model)(x), Predictor(trained.model)(x), rtol=0, atol=1e-6)
    # The evaluation scored each held-out clip as the pipeline scores a segment.
    ev = trained.evaluations["as-is"]
    i = ev.files.index(str(DATA / "speech_en_transfer.wav"))
    assert bundle.pooling == PRESETS["smn"].pooling == "energy"
    power = bundle.features.window_power(y, window=bundle.window_samples, hop=bundle.hop_samples)
    assert len(x) > 1 and power.max() > 2 * power.min()  # windows whose weights differ
    np.testing.assert_allclose(Classifier(bundle).segment_probs([x], [power])[0], ev.probs[i], atol=1e-5)


@pytest.mark.slow
def test_manifest_records_contract_data_and_heldout_figures(trained):
    m = load_bundle(trained.bundle.path).manifest
    assert m.trained and m.name == "speech-music-noise" and m.version == "1.0.0"
    assert m.labels == ("speech", "music", "noise")
    assert (m.sample_rate, m.window_s, m.hop_s) == (8000, 1.0, 0.5)
    assert m.features == PRESETS["smn"].features and m.architecture == "cnn"
    split = m.provenance["data"]["split"]
    assert sorted(split["test"]["groups"]) == sorted(TEST_GROUPS) == sorted(m.evaluation["heldout_groups"])
    assert not set(split["train"]["groups"]) & set(split["test"]["groups"])
    assert split["train"]["clips"] + split["val"]["clips"] + split["test"]["clips"] == 12
    assert set(m.provenance["data"]["hours_per_label"]) == {"speech", "music", "noise"}
    asis = m.evaluation["conditions"]["as-is"]
    assert asis["segments"] == 3 + 1 + 2  # allison prompts, one hold-music excerpt, two tone clips
    assert np.array(asis["confusion"]).sum() == 6
    assert {k: v["support"] for k, v in asis["per_class"].items()} == {"speech": 3, "music": 1, "noise": 2}
    assert "telephone" in m.evaluation["conditions"]
    assert m.evaluation["speed"]["windows_per_s"] > 0
    assert (trained.bundle.path / MODEL_FILE).stat().st_size < 5_000_000
    # training weighed its windows by class_weights: balanced weights' inverses sum to the label count
    weights = np.array(list(m.provenance["training"]["class_weight"].values()))
    assert len(set(weights)) > 1 and (1 / weights).sum() == pytest.approx(3, abs=1e-3)


@pytest.mark.slow
def test_saved_weights_hold_no_optimizer_state(trained):
    """Adam keeps two moments per weight: saved with the model they would triple the file."""
    import zipfile

    import h5py

    def stored(group) -> int:
        n = []
        group.visititems(lambda _, o: n.append(o.size) if isinstance(o, h5py.Dataset) else None)
        return sum(n)

    with zipfile.ZipFile(trained.bundle.path / MODEL_FILE) as z, z.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as h5:
            assert stored(h5["layers"]) == trained.model.count_params()
            assert "optimizer" not in h5 or stored(h5["optimizer"]) == 0


@pytest.mark.slow
def test_a_bundle_is_never_overwritten(trained, dataset):
    before = file_sha256(trained.bundle.path / MODEL_FILE)
    with pytest.raises(BundleError, match="never overwritten"):
        train(dataset, out=trained.bundle.path, arch="cnn", epochs=1, verbose=0)
    assert file_sha256(trained.bundle.path / MODEL_FILE) == before


@pytest.mark.slow
def test_fine_tuning_writes_a_new_version_and_keeps_the_parent(trained, dataset, tmp_path):
    # The parent pools by the mean (as bundles made before pooling existed): the child keeps its contract.
    parent = tmp_path / "v1"
    shutil.copytree(trained.bundle.path, parent)
    data = json.loads((parent / MANIFEST).read_text())
    data["pooling"] = "mean"
    (parent / MANIFEST).write_text(json.dumps(data))
    files_before = {p.name: p.read_bytes() for p in parent.iterdir()}
    with pytest.raises(BundleError, match="never overwritten"):
        train(dataset, out=parent, from_bundle=parent, epochs=1, verbose=0)
    child = train(dataset, out=tmp_path / "v2", from_bundle=parent, freeze_features=True, epochs=1, batch_size=16,
                  max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0, workers=1)
    assert {p.name: p.read_bytes() for p in parent.iterdir()} == files_before
    m = load_bundle(child.bundle.path).manifest
    assert m.version == "1.1.0" and m.name == "speech-music-noise"
    assert m.provenance["parent"] == {"name": "speech-music-noise", "version": "1.0.0",
                                      "sha256": trained.bundle.sha256, "freeze_features": True}
    assert m.features == trained.bundle.manifest.features and m.labels == trained.bundle.labels
    assert m.pooling == "mean" != trained.bundle.pooling
    # the network is the parent's, and the manifest says so
    assert (m.architecture, m.provenance["training"]["arch_kwargs"]) == ("cnn", {"width": 4})
    with pytest.raises(ParameterError, match="width cannot change in a fine-tune"):
        train(dataset, out=tmp_path / "v3", from_bundle=parent, arch_kwargs={"width": 8}, epochs=1, verbose=0)
    assert not (tmp_path / "v3").exists()
    # Frozen features: every layer but the output layer kept the parent's weights.
    new, old = load_bundle(child.bundle.path).model, load_bundle(parent).model
    for a, b in zip(new.layers[:-1], old.layers[:-1]):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wb) for wa, wb in zip(new.layers[-1].get_weights(), old.layers[-1].get_weights()))


@pytest.mark.slow
def test_a_fine_tune_on_other_labels_is_a_new_task_and_one_on_fewer_is_refused(trained, dataset, tmp_path):
    table = pd.read_csv(dataset / "manifest.csv")
    with pytest.raises(ParameterError, match="the data has no clips labelled noise: a fine-tune keeps all of its "
                                             r"parent's labels \(speech, music, noise\)"):
        train(table[table.label != "noise"], out=tmp_path / "fewer", from_bundle=trained.bundle.path, epochs=1, verbose=0)
    assert not (tmp_path / "fewer").exists()
    said = []
    other = table.assign(label=table.label.map({"speech": "voice", "music": "tune", "noise": "noise"}))
    child = train(other, out=tmp_path / "other", from_bundle=trained.bundle.path, epochs=1, batch_size=16,
                  max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0, workers=1,
                  log=said.append).bundle.manifest
    assert child.labels == ("noise", "tune", "voice") and (child.name, child.version) == ("custom", "1.0.0")
    assert child.description == "Fine-tuned from speech-music-noise 1.0.0 with a new output layer for noise, tune, voice."
    assert child.provenance["parent"]["version"] == "1.0.0" and "parent_val_window_accuracy" not in child.provenance["training"]
    assert "new labels noise, tune, voice (the parent's: speech, music, noise): a new output layer" in "\n".join(said)
    named = train(other, out=tmp_path / "named", from_bundle=trained.bundle.path, name="calls", version="0.3.0",
                  epochs=1, batch_size=16, max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0,
                  verbose=0, workers=1).bundle.manifest
    assert (named.name, named.version) == ("calls", "0.3.0")


@pytest.mark.slow
def test_a_fine_tune_starts_gently_and_records_what_its_parent_scored_on_validation(trained, dataset, tmp_path):
    split = dict(test_groups=["moh-reno"], val_groups=["allison-prompts", "noise-tones"], epochs=1, batch_size=16,
                 max_windows_per_epoch=32, verbose=0, workers=1)
    # Output layer only, at a learning rate too small to move it: the fine-tune's validation
    # accuracy must be the parent's, measured on the same windows.
    still = train(dataset, out=tmp_path / "still", from_bundle=trained.bundle.path, freeze_features=True,
                  learning_rate=1e-12, **split).bundle.manifest.provenance["training"]
    assert still["parent_val_window_accuracy"] == still["best_val_window_accuracy"]
    moved = train(dataset, out=tmp_path / "moved", from_bundle=trained.bundle.path, **split).bundle.manifest.provenance["training"]
    assert moved["learning_rate"] == training.FINE_TUNE_LEARNING_RATE < training.LEARNING_RATE
    assert moved["parent_val_window_accuracy"] == still["parent_val_window_accuracy"]
    assert trained.bundle.manifest.provenance["training"]["learning_rate"] == training.LEARNING_RATE
    assert "parent_val_window_accuracy" not in trained.bundle.manifest.provenance["training"]


@pytest.mark.slow
def test_a_fine_tune_trains_as_its_parent_was_trained_unless_a_preset_is_named(trained, dataset, tmp_path):
    from audioclf_core.training import fine_tune_preset

    parent = tmp_path / "v1"
    shutil.copytree(trained.bundle.path, parent)
    data = json.loads((parent / MANIFEST).read_text())
    rec = data["provenance"]["training"]
    assert (rec["crop"], rec["noise_label"]) == ("window", "noise")
    rec["crop"], rec["augmentation"]["p_noise"], rec["augmentation"]["snr_db"] = "whole", 0.123, [7.0, 9.0]
    (parent / MANIFEST).write_text(json.dumps(data))
    kw = dict(epochs=1, batch_size=16, max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0,
              workers=1)
    own = train(dataset, out=tmp_path / "own", from_bundle=parent, augment=["p_mask=0.25"], **kw).bundle.manifest
    assert own.provenance["training"]["crop"] == "whole" and own.provenance["training"]["noise_label"] == "noise"
    assert own.provenance["training"]["augmentation"] == {**rec["augmentation"], "p_mask": 0.25}
    named = train(dataset, out=tmp_path / "named", from_bundle=parent, preset="digits", **kw).bundle.manifest
    assert named.provenance["training"]["augmentation"] == json.loads(json.dumps(PRESETS["digits"].augment.to_dict()))
    assert named.provenance["training"]["noise_label"] is None and named.features == own.features  # the contract stays
    # a parent that records none of it trains as the built-in preset with its labels
    for key in ("crop", "augmentation", "noise_label"):
        del rec[key]
    (parent / MANIFEST).write_text(json.dumps(data))
    task = fine_tune_preset(load_bundle(parent, verify=False))
    smn = PRESETS["smn"]
    assert (task.crop, task.augment, task.noise_label) == (smn.crop, smn.augment, smn.noise_label)
    assert (task.features, task.labels, task.name) == (own.features, own.labels, own.name)


@pytest.mark.slow
def test_a_new_bundle_can_take_other_features_and_a_fine_tune_cannot(trained, dataset, tmp_path):
    from audioclf_core.pipeline import Classifier

    kw = dict(arch="cnn", arch_kwargs={"width": 4}, epochs=1, batch_size=16, max_windows_per_epoch=32,
              test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0, workers=1)
    band = train(dataset, out=tmp_path / "band", features=["fmin=300", "fmax=3400", "n_mels=24"], **kw).bundle
    b = load_bundle(band.path)
    f = b.manifest.features
    assert (f.fmin, f.fmax, f.n_mels) == (300.0, 3400.0, 24)
    assert b.input_shape == (97, 24) and b.model.input_shape[1:3] == (97, 24)
    # The saved contract is the one inference computes: a 1 kHz tone peaks in the band whose
    # filter over 300-3400 Hz weighs 1 kHz most, not where the full band's 24 filters would put it.
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    peak = int(b.features.windows(tone, window=SR, hop=SR // 2)[0].mean(axis=0).argmax())
    k = round(1000 / (SR / 2) * (f.n_fft // 2))
    assert peak == mel_filterbank(sr=SR, n_fft=f.n_fft, n_mels=24, fmin=300, fmax=3400)[:, k].argmax()
    assert peak != mel_filterbank(sr=SR, n_fft=f.n_fft, n_mels=24)[:, k].argmax()
    out = Classifier(b).classify_one(str(DATA / "speech_en_transfer.wav"))
    assert out.status == "ok" and out.segments and all(seg[4].shape == (3,) for seg in out.segments)
    with pytest.raises(ParameterError, match="features cannot change in a fine-tune"):
        train(dataset, out=tmp_path / "ft", from_bundle=trained.bundle.path, features=["fmin=300"], epochs=1, verbose=0)
    for items, message in ((["fmax=5000"], "above the Nyquist frequency"), (["fmax=200"], "hold no FFT bin"),
                           (["hop=3"], "expected NAME=VALUE with NAME one of kind, n_fft"),
                           (["fmin=3400", "fmax=300"], "must exceed fmin")):
        with pytest.raises(ParameterError, match=message):
            train(dataset, out=tmp_path / "bad", features=items, **kw)
    assert not (tmp_path / "ft").exists() and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_repooling_keeps_the_weights_and_measures_the_figures_again(trained, dataset, tmp_path):
    src = trained.bundle
    before = {p.name: p.read_bytes() for p in src.path.iterdir()}
    new = repool(src.path, dataset, out=tmp_path / "mean", pooling="mean", version="1.0.1", report=tmp_path / "rep")
    assert {p.name: p.read_bytes() for p in src.path.iterdir()} == before  # the source stays as it was
    assert (new.pooling, new.version, new.sha256) == ("mean", "1.0.1", src.sha256)
    for name in (MODEL_FILE, "model.tflite"):
        assert (new.path / name).read_bytes() == (src.path / name).read_bytes()
    assert new.manifest.provenance["repooled_from"] == {"version": "1.0.0", "pooling": "energy", "sha256": src.sha256}
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(new, dataset, heldout_only=True, condition=cond)
        assert want.n == 6
        assert new.manifest.evaluation["conditions"][cond] == want.metrics()
    assert (tmp_path / "rep" / "report.md").read_text().count("pooled by their mean (mean)") == 1
    with pytest.raises(BundleError, match="never overwritten"):
        repool(src.path, dataset, out=new.path, pooling="energy", version="1.0.2")
    with pytest.raises(ParameterError, match="pooling='max'"):
        repool(src.path, dataset, out=tmp_path / "x", pooling="max", version="1.0.2")


@pytest.mark.slow
def test_an_ensemble_is_one_bundle_that_averages_its_members(trained, dataset, tmp_path):
    from audioclf_core.engines import load_engine
    from audioclf_core.model import Predictor

    twin = train(dataset, out=tmp_path / "twin", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                 batch_size=16, max_windows_per_epoch=48, test_groups=TEST_GROUPS, val_fraction=0.0, seed=11,
                 verbose=0, workers=1).bundle
    members = [trained.bundle, twin]
    assert twin.sha256 != trained.bundle.sha256
    ens = ensemble([m.path for m in members], dataset, out=tmp_path / "ens", version="2.0.0", report=tmp_path / "rep")
    assert (ens.name, ens.version, ens.labels, ens.pooling) == ("speech-music-noise", "2.0.0", trained.bundle.labels, "energy")
    assert ens.manifest.architecture == "ensemble of 2 cnn"
    assert [(m["version"], m["sha256"], m["seed"]) for m in ens.manifest.provenance["ensemble_of"]] == \
        [("1.0.0", trained.bundle.sha256, 3), ("1.0.0", twin.sha256, 11)]
    # its probabilities are the members' mean, on real windows, through Keras and through LiteRT
    y, _ = sf.read(DATA / "speech_en_vm-nobodyavail.wav", dtype="float32")
    x = ens.features.windows(y, window=ens.window_samples, hop=ens.hop_samples)
    mean = np.mean([Predictor(m.model)(x) for m in members], axis=0)
    assert not np.allclose(Predictor(members[0].model)(x), mean, atol=1e-3)  # the twin does move the answer
    np.testing.assert_allclose(Predictor(ens.model)(x), mean, atol=1e-6)
    np.testing.assert_allclose(load_engine(ens, engine="litert")(x), mean, atol=1e-4)
    # figures measured on the members' held-out groups, as a fresh evaluation gives them
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(ens, dataset, heldout_only=True, condition=cond)
        assert want.n == 6 and ens.manifest.evaluation["conditions"][cond] == want.metrics()
    assert ens.manifest.evaluation["validation"] is None  # these members were trained without validation groups
    assert (tmp_path / "rep" / "report.md").is_file()
    # refusals, each before anything is written
    with pytest.raises(BundleError, match="never overwritten"):
        ensemble([m.path for m in members], dataset, out=ens.path, version="2.0.1")
    with pytest.raises(ParameterError, match="at least two"):
        ensemble([twin.path], dataset, out=tmp_path / "one", version="2.0.1")
    with pytest.raises(ParameterError, match="listed twice"):
        ensemble([twin.path, twin.path], dataset, out=tmp_path / "twice", version="2.0.1")
    with pytest.raises(ParameterError, match="an ensemble cannot be a member; join its members instead"):
        ensemble([ens.path, twin.path], dataset, out=tmp_path / "nested", version="2.0.1")
    other_split = train(dataset, out=tmp_path / "other", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                        batch_size=16, max_windows_per_epoch=48, test_groups=TEST_GROUPS[:2], val_fraction=0.0,
                        seed=12, verbose=0, workers=1).bundle
    with pytest.raises(ParameterError, match="holds out other groups"):
        ensemble([trained.bundle.path, other_split.path], dataset, out=tmp_path / "split", version="2.0.1")
    mean_pooled = repool(twin.path, dataset, out=tmp_path / "twin-mean", pooling="mean", version="1.0.1")
    with pytest.raises(ParameterError, match="in pooling"):
        ensemble([trained.bundle.path, mean_pooled.path], dataset, out=tmp_path / "pool", version="2.0.1")
    with pytest.raises(ParameterError, match="fine-tune one of its members"):
        train(dataset, out=tmp_path / "tuned", from_bundle=ens.path, epochs=1, verbose=0)
    assert not any((tmp_path / n).exists() for n in ("one", "twice", "nested", "split", "pool", "tuned"))


@pytest.mark.slow
def test_a_soup_averages_the_weights_of_fine_tunes_of_one_parent(trained, dataset, tmp_path):
    from audioclf_core.engines import load_engine
    from audioclf_core.model import Predictor

    tunes = [train(dataset, out=tmp_path / f"ft{seed}", from_bundle=trained.bundle.path, epochs=1, batch_size=16,
                   max_windows_per_epoch=48, learning_rate=0.01, test_groups=TEST_GROUPS, val_fraction=0.0, seed=seed,
                   verbose=0, workers=1).bundle for seed in (21, 22)]
    s = soup([t.path for t in tunes], dataset, out=tmp_path / "soup", version="1.2.0", report=tmp_path / "rep")
    assert (s.name, s.version, s.manifest.architecture, s.pooling) == ("speech-music-noise", "1.2.0", "cnn", "energy")
    assert s.manifest.provenance["parent"] == {"name": "speech-music-noise", "version": "1.0.0", "sha256": trained.bundle.sha256}
    assert [(m["sha256"], m["seed"], m["freeze_features"]) for m in s.manifest.provenance["soup_of"]] == \
        [(t.sha256, t.manifest.provenance["training"]["seed"], False) for t in tunes]
    training = s.manifest.provenance["training"]
    assert training["members"] == 2 and training["learning_rate"] == 0.01  # shared by both
    assert "seed" not in training and "history" not in training  # one run's, not the soup's
    assert training["seconds"] == pytest.approx(sum(t.manifest.provenance["training"]["seconds"] for t in tunes), abs=0.1)
    # every weight is the members' mean, and the members did differ: one model's size, not two
    soup_w, tune_w = s.model.get_weights(), [t.model.get_weights() for t in tunes]
    assert len(soup_w) == len(tune_w[0]) and s.model.count_params() == tunes[0].model.count_params()
    assert any(not np.allclose(a, b) for a, b in zip(*tune_w))
    for w, a, b in zip(soup_w, *tune_w):
        np.testing.assert_allclose(w, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)
    # it runs like any bundle: LiteRT gives what Keras gives
    y, _ = sf.read(DATA / "speech_en_vm-nobodyavail.wav", dtype="float32")
    x = s.features.windows(y, window=s.window_samples, hop=s.hop_samples)
    np.testing.assert_allclose(load_engine(s, engine="litert")(x), Predictor(s.model)(x), atol=1e-4)
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(s, dataset, heldout_only=True, condition=cond)
        assert want.n == 6 and s.manifest.evaluation["conditions"][cond] == want.metrics()
    assert (tmp_path / "rep" / "report.md").is_file()
    # refusals, each before anything is written
    with pytest.raises(ParameterError, match="different parents"):
        soup([tunes[0].path, trained.bundle.path], dataset, out=tmp_path / "no-parent", version="1.2.1")
    with pytest.raises(ParameterError, match="record no parent"):
        soup([trained.bundle.path, tunes[0].path], dataset, out=tmp_path / "no-parent", version="1.2.1")
    wider = tmp_path / "wider"
    shutil.copytree(tunes[1].path, wider)
    data = json.loads((wider / MANIFEST).read_text())
    data["provenance"]["training"]["arch_kwargs"] = {"width": 8}
    (wider / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ParameterError, match=r"\{'width': 8\}, .*ft21 one with \{'width': 4\}: a soup averages one"):
        soup([tunes[0].path, wider], dataset, out=tmp_path / "mixed", version="1.2.1")
    # the network decides, not only its record: layers of another shape under the same record are refused
    fields = {k: v for k, v in tunes[1].manifest.model_dump(mode="json").items() if k not in ("sha256", "created_at")}
    narrow = save_bundle(build("cnn", tunes[1].input_shape, 3, seed=0, width=2), tmp_path / "narrow",
                         litert=False, **fields)
    assert narrow.manifest.provenance["training"]["arch_kwargs"] == {"width": 4}
    with pytest.raises(ParameterError, match="record one architecture, but their layers differ in shape"):
        soup([tunes[0].path, narrow.path], dataset, out=tmp_path / "narrowed", version="1.2.1")
    # an empty record (fine-tunes made before `train --from` copied the parent's) is a gap, not a difference:
    # the same network joins, and the soup records the settings the other member does
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(tunes[1].path, unrecorded)
    data = json.loads((unrecorded / MANIFEST).read_text())
    data["provenance"]["training"]["arch_kwargs"] = {}
    (unrecorded / MANIFEST).write_text(json.dumps(data))
    gap = soup([unrecorded, tunes[0].path], dataset, out=tmp_path / "gap", version="1.2.1")
    assert gap.manifest.provenance["training"]["arch_kwargs"] == {"width": 4}
    for w, a in zip(gap.model.get_weights(), s.model.get_weights()):
        np.testing.assert_allclose(w, a, rtol=1e-6, atol=1e-7)  # the same two members as s, in the other order
    assert "members" not in gap.manifest.provenance["soup_of"][0]  # single runs
    # a soup can join another soup of the same parent: its record says how many runs it averages
    deeper = soup([gap.path, tunes[0].path], dataset, out=tmp_path / "deeper", version="1.2.2")
    assert [m.get("members") for m in deeper.manifest.provenance["soup_of"]] == [2, None]
    with pytest.raises(BundleError, match="never overwritten"):
        soup([t.path for t in tunes], dataset, out=s.path, version="1.2.1")
    assert not any((tmp_path / n).exists() for n in ("no-parent", "mixed", "narrowed"))


@pytest.mark.slow
def test_consistency_training_fine_tunes_the_network_and_records_its_weight(trained, dataset, tmp_path):
    r = train(dataset, out=tmp_path / "paired", from_bundle=trained.bundle.path, epochs=2, batch_size=16,
              max_windows_per_epoch=48, test_groups=["allison-prompts", "noise-tones"], val_groups=["moh-reno"], seed=5,
              verbose=0, workers=1, consistency=12.0)
    t = r.bundle.manifest.provenance["training"]
    assert t["consistency"] == 12.0 and t["epochs_run"] == 2
    assert len(t["history"]["val_accuracy"]) == 2 and 0 <= min(t["history"]["val_accuracy"]) <= 1  # one view each
    # what is saved is the network itself, changed by training, not the two-view wrapper
    assert r.bundle.input_shape == trained.bundle.input_shape and r.bundle.model.name != "paired"
    assert any(not np.allclose(a, b) for a, b in zip(r.bundle.model.get_weights(), trained.bundle.model.get_weights()))
    assert train(dataset, out=tmp_path / "plain", from_bundle=trained.bundle.path, epochs=1, batch_size=16,
                 max_windows_per_epoch=16, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0,
                 workers=1).bundle.manifest.provenance["training"]["consistency"] == 0.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ParameterError, match="consistency"):
            train(dataset, out=tmp_path / "bad", from_bundle=trained.bundle.path, epochs=1, consistency=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_evaluating_a_bundle_on_its_own_clips_counts_every_clip(trained, dataset, tmp_path):
    ev = evaluate_bundle(trained.bundle.path, dataset)
    assert ev.n == 12 and ev.confusion.sum() == 12
    assert ev.confusion.sum(axis=1).tolist() == [6, 2, 4]  # speech, music, noise
    assert ev.probs.shape == (12, 3) and np.allclose(ev.probs.sum(axis=1), 1, atol=1e-5)
    held = evaluate_bundle(trained.bundle.path, dataset, heldout_only=True)
    assert sorted(set(held.groups)) == sorted(TEST_GROUPS) and held.n == 6
    # a selection that keeps nothing says what it asked for and which groups the data has
    with pytest.raises(ParameterError) as none_left:
        evaluate_bundle(trained.bundle.path, dataset, heldout_only=True, groups=["allison-digits"])
    assert str(none_left.value) == (
        f"no clips of {dataset} are in the groups bundle {trained.bundle.name} {trained.bundle.version} held out "
        f"({', '.join(sorted(TEST_GROUPS))}) and in the groups named (allison-digits); its groups: allison-digits, "
        "allison-prompts, moh-macroform, moh-reno, noise-hiss and 1 more")
    write_report(ev, tmp_path / "rep", title="own clips")
    assert "Unit: one segment (a clip)," in (tmp_path / "rep" / "report.md").read_text()
    mis = pd.read_csv(tmp_path / "rep" / "misclassified.csv")
    assert len(mis) == int((ev.y_pred != ev.y_true).sum())
    assert list(mis.columns) == ["file", "start_s", "end_s", "group", "true", "predicted", "p_speech", "p_music", "p_noise"]


@pytest.mark.slow
def test_clips_that_were_not_scored_are_listed_in_the_report(trained, dataset, tmp_path):
    table = pd.read_csv(dataset / "manifest.csv")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    extra = pd.DataFrame({"path": [str(tmp_path / "broken.wav"), str(tmp_path / "quiet.wav")],
                          "label": ["speech", "noise"], "group": ["x", "y"], "synthetic": [0, 0]})
    pd.concat([table, extra]).to_csv(tmp_path / "m.csv", index=False)
    ev = evaluate_bundle(trained.bundle.path, tmp_path / "m.csv")
    assert ev.n == 12  # the twelve good clips, scored as before
    (bad, why_bad, bad_silent), (quiet, why_quiet, quiet_silent) = ev.left_out
    assert (bad_silent, quiet_silent) == (False, True)
    assert bad == str(tmp_path / "broken.wav") and why_bad.startswith(f"cannot decode {bad}")
    assert quiet == str(tmp_path / "quiet.wav") and why_quiet.startswith("no sound above -50 dBFS")
    write_report(ev, tmp_path / "rep", title="with two bad clips")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "**2 clips of the data were not scored** (`left_out.csv`): 1 did not decode (the first: cannot decode" in report
    assert "; 1 hold no sound classification would make a segment of." in report
    assert pd.read_csv(tmp_path / "rep" / "left_out.csv").file.tolist() == [bad, quiet]
    assert [d["file"] for d in json.loads((tmp_path / "rep" / "metrics.json").read_text())["as-is"]["left_out"]] == [bad, quiet]
    write_report(evaluate_bundle(trained.bundle.path, dataset), tmp_path / "clean", title="all scored")
    assert "not scored" not in (tmp_path / "clean" / "report.md").read_text()
    assert not (tmp_path / "clean" / "left_out.csv").exists()


@pytest.mark.slow
def test_a_training_report_lists_the_held_out_clips_that_were_not_scored(dataset, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "broken-train.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    extra = pd.DataFrame({"path": [str(tmp_path / n) for n in ("broken.wav", "quiet.wav", "broken-train.wav")],
                          "label": ["speech", "noise", "music"], "group": ["allison-prompts", "noise-tones", "moh-macroform"],
                          "synthetic": [0, 0, 0]})
    base = pd.read_csv(dataset / "manifest.csv")
    pd.concat([base, extra]).to_csv(tmp_path / "m.csv", index=False)
    lines: list[str] = []
    train(tmp_path / "m.csv", out=tmp_path / "b", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
          batch_size=16, max_windows_per_epoch=48, test_groups=TEST_GROUPS, val_fraction=0.0, seed=3, verbose=0,
          workers=1, report=tmp_path / "rep", log=lines.append)
    # the split counts the clips each side holds: not the two that did not decode, but the silent one
    held = int(base.group.isin(TEST_GROUPS).sum())
    split_line = next(line for line in lines if line.startswith("split by group:"))
    assert f"train {len(base) - held} clips" in split_line and f"test {held + 1} clips" in split_line, split_line
    # the held-out ones only: a training clip that did not decode changes no held-out figure
    left = pd.read_csv(tmp_path / "rep" / "left_out.csv")
    assert left.file.tolist() == [str(tmp_path / "broken.wav"), str(tmp_path / "quiet.wav")]
    assert left.reason.iloc[0].startswith("cannot decode") and left.reason.iloc[1].startswith("no sound above -50 dBFS")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "**2 clips of the data were not scored** (`left_out.csv`)" in report
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert [len(metrics[c]["left_out"]) for c in ("as-is", "telephone")] == [2, 2]


@pytest.mark.slow
def test_search_runs_its_trials_and_trains_the_best_on_validation(dataset, tmp_path, caplog):
    import logging

    from audioclf_core import model as model_module

    # as in a fresh process: an earlier test's scoring may have installed the filter already
    logging.getLogger("tensorflow").removeFilter(model_module._ONE_FUNCTION_PER_MODEL)
    lines: list[str] = []
    result = train(dataset / "manifest.csv", out=tmp_path / "b", arch="cnn", preset="smn", arch_kwargs={"width": 4},
                   epochs=1, batch_size=16, max_windows_per_epoch=48, search=4,
                   test_groups=["noise-tones"], val_groups=["allison-digits", "moh-reno"], seed=3,
                   verbose=0, workers=1, log=lines.append)
    training = result.bundle.manifest.provenance["training"]
    trials = training["search_trials"]
    assert len(trials) == 4 and trials[0]["arch_kwargs"] == {"width": 4}  # the given configuration, then draws
    assert [t["epochs"] for t in trials] == [1] * 4  # a trial trains no longer than the final run
    assert len({(json.dumps(t["arch_kwargs"], sort_keys=True), t["learning_rate"]) for t in trials}) == 4
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["params"]))
    assert training["arch_kwargs"] == best["arch_kwargs"] and result.model.count_params() == best["params"]
    assert sum(line.startswith("search trial ") for line in lines) == 4
    # five models trained in one process (TensorFlow warns from the fifth), each tracing its own step once: not "retracing"
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


@pytest.mark.slow
def test_a_bundle_with_a_wrong_manifest_is_refused(trained, dataset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained.bundle.path, bad)
    data = json.loads((bad / MANIFEST).read_text())
    data["labels"] = ["speech", "music", "noise", "silence"]
    (bad / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="3 outputs, but the manifest lists 4 labels"):
        evaluate_bundle(bad, dataset)
    data["sample_rate"] = 8001
    (bad / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=str(bad)):
        evaluate_bundle(bad, dataset)


def _long_call(path: Path) -> list[tuple[float, float]]:
    """Three prompts said three times with 1 s of silence after each (31 s, longer than a
    segment can be) written to ``path``; returns where each prompt lies, seconds."""
    sr, gap = 8000, np.zeros(8000, np.float32)
    speech = [sf.read(DATA / f"speech_en_{n}.wav", dtype="float32")[0] for n in ("queue-thereare", "transfer", "vm-nobodyavail")]
    parts, placed, t = [], [], 0.0
    for _ in range(3):
        for y in speech:
            parts += [y, gap]
            placed.append((t, t + len(y) / sr))
            t += (len(y) + len(gap)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts), sr)
    return placed


@pytest.mark.slow
def test_evaluating_labelled_recordings_scores_their_segments(tmp_path):
    """A labelled recording longer than a segment is scored as classify would cut it."""
    placed = _long_call(tmp_path / "speech" / "call-1" / "long.wav")
    (tmp_path / "music").mkdir()
    shutil.copy(DATA / "music_reno_project-system.wav", tmp_path / "music")
    ev = evaluate_bundle("speech-music-noise", tmp_path)
    assert ev.n == 10 and ev.groups.count("call-1") == 9
    rows = ev.table()
    mine = rows[rows.group == "call-1"].sort_values("start_s")
    # One segment per placed prompt: inside it (plus the 100 ms kept at each edge) and most of it
    # (the prompts' own quiet lead-in and tail fall under the silence threshold).
    for (s0, s1), (a, b) in zip(mine[["start_s", "end_s"]].to_numpy(), placed):
        assert a - 0.11 <= s0 < s1 <= b + 0.11 and s1 - s0 >= 0.8 * (b - a)
    assert rows[rows.group != "call-1"][["start_s", "end_s"]].to_numpy().tolist() == [[0.0, 4.0]]
    assert (mine.true == "speech").all()
    write_report(ev, tmp_path / "rep", title="recordings")
    assert "each sound of a clip longer than a segment can be" in (tmp_path / "rep" / "report.md").read_text()
    assert len(pd.read_csv(tmp_path / "rep" / "predictions.csv")) == 10


# -- augmentation and windows ----------------------------------------------------------


def test_augmentation_parameters_are_checked_and_rooms_never_reach_validation():
    with pytest.raises(ParameterError, match="probability"):
        AugmentParams(p_reverb=1.5)
    with pytest.raises(ParameterError, match="LOW <= HIGH"):
        AugmentParams(pitch=(1.8, 0.6))
    with pytest.raises(ParameterError, match="positive"):
        AugmentParams(rt60_s=(0.0, 0.5))
    with pytest.raises(ParameterError, match="positive"):
        AugmentParams(hold_s=(-0.5, 1.0))
    changed = AugmentParams().with_items(["p_reverb=1", "rt60_s=0.2,0.4", "mask_frames=3"])
    assert (changed.p_reverb, changed.rt60_s, changed.mask_frames) == (1.0, (0.2, 0.4), 3)
    # Validation windows hear the channel only: the same windows whatever the room settings.
    fx = FeatureExtractor(PRESETS["digits"].features, sr=SR)
    y = np.sin(2 * np.pi * 300 * np.arange(6000) / SR).astype(np.float32) * np.hanning(6000).astype(np.float32)
    a = validation_windows([y], np.array([1]), fx=fx, window=SR, hop=SR // 2, seed=0, params=AugmentParams())
    b = validation_windows([y], np.array([1]), fx=fx, window=SR, hop=SR // 2, seed=0, params=changed)
    assert np.array_equal(a[0], b[0])
    rng = np.random.default_rng(0)
    z = augment(y, sr=SR, params=AugmentParams(p_reverb=1, p_noise=0, p_telephone=0, p_mulaw=0, p_clip=0,
                                               gain_db=(0, 0)), rng=rng)
    assert z.shape == y.shape and not np.allclose(z / np.abs(z).max(), y / np.abs(y).max(), atol=1e-3)


@pytest.mark.parametrize("crop", ["window", "whole"])
def test_training_windows_are_the_inference_windows(crop):
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    y, _ = sf.read(DATA / "music_reno_project-system.wav", dtype="float32")
    short, _ = sf.read(DATA / "speech_en_digits_5.wav", dtype="float32")
    clean = AugmentParams(p_noise=0, p_telephone=0, p_clip=0, p_mulaw=0, p_speed=0, p_short=0, gain_db=(0, 0), pad_s=0)
    clips = [short, y if crop == "whole" else y[:SR]]
    s = WindowSampler(clips, np.array([0, 1]), fx, SR, SR // 2, crop, clean, [], seed=0)
    x, labels = s.batch(np.arange(len(s)), epoch=0, key=0)
    assert x.shape[1:] == (97, 40) and x.dtype == np.float32 and sorted(labels) == [0, 1]
    assert np.allclose(x.mean(axis=(1, 2)), 0, atol=1e-4) and np.allclose(x.std(axis=(1, 2)), 1, atol=1e-3)
    # With nothing random left, each window is one that fx.windows() gives for its clip (peak-scaled).
    for xi, li in zip(x, labels):
        clip = clips[li]
        ref = fx.windows(clip / np.abs(clip).max(), window=SR, hop=SR // 2)
        assert np.min(np.abs(ref - xi).max(axis=(1, 2))) < 1e-3


def test_a_paired_sampler_gives_each_window_and_the_same_audio_through_a_line():
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    music, _ = sf.read(DATA / "music_reno_project-system.wav", dtype="float32")
    speech, _ = sf.read(DATA / "speech_en_vm-nobodyavail.wav", dtype="float32")
    clean = AugmentParams(p_noise=0, p_telephone=0, p_clip=0, p_mulaw=0, p_speed=0, p_short=0, gain_db=(0, 0), pad_s=0,
                          p_mask=0)
    args = ([speech, music], np.array([0, 1]), fx, SR, SR // 2, "window", clean, [])
    plain = WindowSampler(*args, seed=4)
    pairs = WindowSampler(*args, seed=4, paired=True)
    pos = np.arange(len(pairs))
    x, y = plain.batch(pos, epoch=0, key=0)
    xx, yy = pairs.batch(pos, epoch=0, key=0)
    assert xx.shape == (len(pos), 2, 97, 40) and xx.dtype == np.float32 and np.array_equal(y, yy)
    np.testing.assert_array_equal(xx[:, 0], x)  # the first view is the window as drawn
    # the second is that audio through a line: under 200 Hz (the lowest mel bands) it loses most
    low = fx.n_features // 20
    drop = xx[:, 0, :, :low].mean(axis=(1, 2)) - xx[:, 1, :, :low].mean(axis=(1, 2))
    assert (drop > 0.2).all(), drop  # 0 if the second view were the first
    # masks fall on the same bands and frames of both views
    masked = WindowSampler(*args[:6], replace(clean, p_mask=1.0), [], seed=4, paired=True).batch(pos, epoch=0, key=0)[0]
    flat = [[np.flatnonzero(np.ptp(v, axis=0) == 0).tolist() for v in pair] for pair in masked]
    assert all(a == b for a, b in flat) and any(a for a, _ in flat)


def test_consistency_loss_is_the_first_views_cross_entropy_plus_the_divergence():
    from audioclf_core.training import consistency_loss

    y = np.array([0, 2])
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    b = np.array([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6]], np.float32)
    ce = -np.log([0.7, 0.6])
    m = (a + b) / 2
    js = 0.5 * (a * np.log(a / m) + b * np.log(b / m)).sum(axis=1)
    assert js[0] > 0.05 and js[1] == 0
    got = np.asarray(consistency_loss(12.0)(y, np.stack([a, b], axis=1)))
    np.testing.assert_allclose(got, ce + 12 * js, rtol=1e-5)
    # the second view teaches no label: with the views swapped, only the cross-entropy changes
    swapped = np.asarray(consistency_loss(12.0)(y, np.stack([b, a], axis=1)))
    np.testing.assert_allclose(swapped - got, -np.log([0.2, 0.6]) - ce, rtol=1e-5)


def test_a_paired_model_runs_the_network_on_each_view_with_its_own_weights():
    from audioclf_core.model import Predictor
    from audioclf_core.training import paired_model

    net = build("cnn", (97, 40), 3, seed=0, width=4)
    x = np.random.default_rng(0).standard_normal((5, 2, 97, 40)).astype(np.float32)
    out = np.asarray(paired_model(net)(x, training=False))
    assert out.shape == (5, 2, 3)
    np.testing.assert_allclose(out[:, 0], Predictor(net)(x[:, 0]), atol=1e-5)
    np.testing.assert_allclose(out[:, 1], Predictor(net)(x[:, 1]), atol=1e-5)


def test_an_epoch_draws_each_clip_once_per_window_of_audio_it_holds(monkeypatch):
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    six, one, tiny = (np.zeros(n, np.float32) for n in (6 * SR, SR, int(0.3 * SR)))
    clean = AugmentParams()
    s = WindowSampler([six, one, tiny], np.array([0, 1, 1]), fx, SR, SR // 2, "window", clean, [], seed=0)
    assert len(s) == 6 + 1 + 1 and s.class_counts(3).tolist() == [6, 2, 0]  # a short clip is drawn once, not never
    s = WindowSampler([six, one], np.array([0, 1]), fx, SR, SR // 2, "window", clean, [], seed=0, repeat=np.array([3, 1]))
    assert len(s) == 3 * 6 + 1
    # what reaches augmentation: a short crop is that many seconds; a whole clip gets up to pad_s each side
    sizes = []
    real_augment = training.augment
    monkeypatch.setattr(training, "augment", lambda y, **kw: sizes.append(y.size) or real_augment(y, **kw))
    crops = WindowSampler([six], np.array([0]), fx, SR, SR // 2, "window",
                          AugmentParams(p_short=1.0, short_s=(0.5, 0.5), p_speed=0), [], seed=0)
    crops.batch(np.arange(len(crops)), epoch=0, key=0)
    assert set(sizes) == {SR // 2}
    sizes.clear()
    whole = WindowSampler([one] * 20, np.zeros(20, int), fx, SR, SR // 2, "whole", AugmentParams(pad_s=0.15, p_speed=0), [],
                          seed=0)
    whole.batch(np.arange(len(whole)), epoch=0, key=0)
    assert all(SR <= n <= SR + 2 * int(0.15 * SR) for n in sizes) and max(sizes) > SR + 100


def test_class_weights_give_each_label_the_same_total_weight():
    w = class_weights([30, 10, 0])
    np.testing.assert_allclose(w, [40 / 90, 40 / 30, 0.0])
    counts = np.array([120, 7, 33, 1])
    totals = class_weights(counts) * counts
    np.testing.assert_allclose(totals, counts.sum() / 4)  # every label weighs the same in an epoch
    np.testing.assert_allclose(class_weights([5, 5, 5]), 1.0)  # balanced data is left as it is
    for bad in ([], [0, 0], [3, -1]):
        with pytest.raises(ParameterError):
            class_weights(bad)


def _train_and_keep_the_sampler(table, tmp_path, monkeypatch, **kw):
    """Train a tiny MLP on ``table`` (TEST_GROUPS held out, real clips drawn 3 times); returns
    the training windows' sampler and the bundle."""
    table.to_csv(tmp_path / "manifest.csv", index=False)
    made = []

    class Recording(training.WindowSampler):
        def __post_init__(self):
            super().__post_init__()
            made.append(self)

    monkeypatch.setattr(training, "WindowSampler", Recording)
    b = train(tmp_path / "manifest.csv", out=tmp_path / "b", arch="mlp", preset="smn", epochs=1, batch_size=16,
              test_groups=TEST_GROUPS, val_fraction=0.0, real_repeat=3, verbose=0, workers=1, **kw).bundle
    return made[-1], b


def test_training_mixes_only_training_noise_and_repeats_only_real_clips(dataset, tmp_path, monkeypatch):
    """Held-out noise must not leak into training windows as a noise bed; real_repeat is for real clips."""
    table = pd.read_csv(dataset / "manifest.csv")
    table.loc[table.group == "allison-digits", "synthetic"] = 1  # as if a TTS voice
    s, _ = _train_and_keep_the_sampler(table, tmp_path, monkeypatch, max_windows_per_epoch=32)
    read = {name: sf.read(dataset / "noise" / f"{name}.wav", dtype="float32")[0] for name in ("hiss", "hum", "ringback", "dtmf")}
    same = lambda a, b: a.shape == b.shape and np.allclose(a, b, atol=1e-4)  # noqa: E731
    assert len(s.noise_pool) == 2
    assert all(any(same(c, read[n]) for n in ("hiss", "hum")) for c in s.noise_pool)  # the training group's, not noise-tones'
    train_rows = table[~table.group.isin(TEST_GROUPS)].reset_index(drop=True)
    assert len(s.repeat) == len(train_rows)
    assert s.repeat.tolist() == np.where(train_rows.synthetic == 1, 1, 3).tolist()  # clips in the manifest's order
    assert (s.repeat == 1).sum() == (train_rows.synthetic == 1).sum() > 0


def test_training_learns_the_sounds_of_a_long_recording_not_its_silences(dataset, tmp_path, monkeypatch):
    table = pd.read_csv(dataset / "manifest.csv")
    _long_call(tmp_path / "long.wav")
    long_row = {"path": str(tmp_path / "long.wav"), "label": "speech", "group": "call-1", "synthetic": 0}
    table = pd.concat([table.iloc[:1], pd.DataFrame([long_row]), table.iloc[1:]], ignore_index=True)
    table.loc[table.group == "allison-digits", "synthetic"] = 1
    s, b = _train_and_keep_the_sampler(table, tmp_path, monkeypatch, max_windows_per_epoch=64)
    train_rows = table[~table.group.isin(TEST_GROUPS)].reset_index(drop=True)
    k = int(np.flatnonzero(train_rows.group == "call-1")[0])
    assert len(s.clips) == len(train_rows) - 1 + 9  # the recording's nine prompts, not its silences
    prompts = s.clips[k: k + 9]
    assert all(len(c) <= 3.1 * SR for c in prompts) and (s.labels[k: k + 9] == 0).all()  # speech, in the manifest's place
    silent = [float(np.sqrt(np.mean(c[:80] ** 2))) for c in prompts]
    assert max(silent) < 0.05  # each piece starts in the kept edge of a pause, not mid-word
    rows = np.where(train_rows.synthetic == 1, 1, 3).tolist()
    assert s.repeat.tolist() == rows[:k] + [3] * 9 + rows[k + 1:]  # repeats follow their rows
    assert (s.repeat == 1).sum() == (train_rows.synthetic == 1).sum() > 0
    assert b.manifest.provenance["data"]["long_clips_cut_at_silences"] == 1


@pytest.mark.parametrize("crop", ["window", "whole"])
def test_held_sounds_reach_training_windows_only_when_drawn(crop):
    # p_hold 0 draws nothing, so a recipe without holds keeps its random stream whatever the
    # hold range; at p_hold 1 the windows change, and stay windows of the contract's shape.
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    short, _ = sf.read(DATA / "speech_en_digits_5.wav", dtype="float32")
    music, _ = sf.read(DATA / "music_reno_project-system.wav", dtype="float32")
    clips = [short, music[: 3 * SR]]

    def windows(params):
        s = WindowSampler(clips, np.array([0, 1]), fx, SR, SR // 2, crop, params, [], seed=0)
        return s.batch(np.arange(len(s)), epoch=0, key=0)[0]

    base = windows(AugmentParams())
    assert np.array_equal(base, windows(AugmentParams(hold_s=(1.0, 1.2))))
    held = windows(AugmentParams(p_hold=1.0))
    assert held.shape == base.shape and np.isfinite(held).all() and not np.allclose(held, base)


# -- evaluation on known answers -------------------------------------------------------


def test_metrics_on_known_answers(tmp_path):
    labels = ("a", "b", "c")
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
    probs = np.full((9, 3), 0.1, dtype=np.float32)
    probs[np.arange(9), pred] = 0.8
    ev = Evaluation(labels, y_true, probs, [f"f{i}.wav" for i in range(9)], ["g1"] * 5 + ["g2"] * 4)
    assert ev.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert confusion_matrix(y_true, pred, n_labels=3).sum() == 9
    assert ev.accuracy == pytest.approx(7 / 9)
    pc = ev.per_class().set_index("label")
    assert pc.loc["a", "precision"] == pytest.approx(2 / 3) and pc.loc["a", "recall"] == pytest.approx(2 / 3)
    assert pc.loc["b", "precision"] == pytest.approx(2 / 3) and pc.loc["b", "recall"] == 1.0
    assert pc.loc["c", "precision"] == 1.0 and pc.loc["c", "recall"] == pytest.approx(3 / 4)
    f1 = [2 / 3, 0.8, 6 / 7]
    assert ev.macro_f1 == pytest.approx(np.mean(f1))
    assert pc["support"].tolist() == [3, 2, 4]
    assert roc_auc_ovr(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])).tolist() == [1.0, 1.0]
    assert roc_auc_ovr(np.array([0, 1, 0, 1]), np.array([[0.5, 0.5]] * 4)).tolist() == [0.5, 0.5]
    assert ev.per_group().set_index("group")["accuracy"].to_dict() == {"g1": 0.8, "g2": 0.75}
    auc = roc_auc_ovr(y_true, probs)
    assert np.ptp(auc) > 0 and ev.metrics()["macro_roc_auc"] == round(float(np.mean(auc)), 4)
    # a label with no clip and no prediction has no F1: the macro mean is over the labels present
    two = Evaluation(labels, y_true[:5], probs[:5], [f"f{i}.wav" for i in range(5)], ["g1"] * 5)
    assert two.confusion[2].sum() == 0 and two.confusion[:, 2].sum() == 0
    assert two.macro_f1 == pytest.approx(np.mean([0.8, 0.8]))  # a: P 1, R 2/3; b: P 2/3, R 1
    # ... and the per-class table says so, rather than an F1 of 0 beside a macro F1 that ignores it
    c = two.per_class().set_index("label").loc["c"]
    assert c.support == 0 and np.isnan(c.recall) and np.isnan(c.f1) and np.isnan(c.precision)
    assert two.metrics()["per_class"]["c"]["f1"] is None
    # a label with no segment that something was taken for has a precision: 0
    taken = probs[:5].copy()
    taken[0] = [0.1, 0.1, 0.8]
    c = Evaluation(labels, y_true[:5], taken, [f"f{i}.wav" for i in range(5)], ["g1"] * 5).per_class().set_index("label").loc["c"]
    assert c.precision == 0 and np.isnan(c.f1)

    folder = write_report({"as-is": ev, "telephone": ev}, tmp_path / "r", title="known", context={"bundle": "x"})
    for name in ("report.md", "confusion.png", "roc.png", "confusion-telephone.png", "per_class.csv", "confusion.csv",
                 "per_group.csv", "misclassified.csv", "metrics.json"):
        assert (folder / name).is_file(), name
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    mis = pd.read_csv(folder / "misclassified.csv")
    assert mis[["file", "true", "predicted"]].values.tolist() == [["f2.wav", "a", "b"], ["f8.wav", "c", "a"]]
    cm = pd.read_csv(folder / "confusion.csv", index_col=0)
    assert cm.values.tolist() == ev.confusion.tolist()
    md = (folder / "report.md").read_text()
    assert "| as-is | 9 | 0.778 |" in md and "![confusion matrix](confusion.png)" in md
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["as-is"]["confusion"] == ev.confusion.tolist() and metrics["as-is"]["segments"] == 9
    assert "never seen in training" in md and "Not all held out" not in md

    # What the report says about groups the model was trained on, or may have been.
    md = (write_report(ev, tmp_path / "seen", title="t", seen=["g2"]) / "report.md").read_text()
    assert "**Not all held out:** 1 of the 2 groups evaluated here" in md and "(g2)" in md
    assert "never seen in training" not in md
    md = (write_report(ev, tmp_path / "unknown", title="t", seen=None) / "report.md").read_text()
    assert "does not record the groups it was trained on" in md and "never seen in training" not in md


def test_the_report_says_segments_were_cut_only_when_a_file_gave_several_spans(tmp_path):
    labels = ("a", "b")
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)

    def unit(files, spans, name):
        ev = Evaluation(labels, np.array([0, 1, 0]), probs, files, ["g"] * 3, spans=spans)
        md = (write_report(ev, tmp_path / name, title="t") / "report.md").read_text()
        return md.split("Unit: one segment (", 1)[1].split(")", 1)[0], ev.was_cut

    listed_twice = unit(["x.wav", "x.wav", "y.wav"], np.array([[0, 2.0], [0, 2.0], [0, 1.0]]), "twice")
    cut = unit(["x.wav", "x.wav", "y.wav"], np.array([[0.1, 1.0], [3.2, 4.0], [0, 1.0]]), "cut")
    assert listed_twice == ("a clip", False)
    assert cut == ("a clip, or each sound of a clip longer than a segment can be, cut at its silences", True)
    assert unit(["x.wav", "x.wav", "y.wav"], None, "no-spans") == ("a clip", False)


def test_trained_groups_reads_the_recorded_split():
    from types import SimpleNamespace

    from audioclf_core.bundle import load_bundle
    from audioclf_core.evaluation import trained_groups

    def manifest(split):
        return SimpleNamespace(provenance={"data": {"split": split}} if split is not None else {})

    split = {"train": {"groups": ["b", "a"]}, "val": {"groups": ["c", "a"]}, "test": {"groups": ["t"]}}
    assert trained_groups(manifest(split)) == ["a", "b", "c"]  # test groups are not "seen"
    assert trained_groups(manifest({"train": {"groups": []}, "val": {"groups": []}})) == []
    assert trained_groups(manifest({"train": {"clips": 3}})) is None
    assert trained_groups(manifest(None)) is None
    assert trained_groups(load_bundle("placeholder").manifest) is None
    shipped = load_bundle("speech-music-noise").manifest
    held = set(shipped.evaluation["heldout_groups"])
    assert len(trained_groups(shipped)) > 50 and not held & set(trained_groups(shipped))


def test_wilson_interval_matches_scipy_and_stays_in_range():
    from scipy.stats import binomtest

    for k, n in [(45, 57), (3135, 3307), (1, 9), (7, 9)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-6)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2       # nothing right: the interval still admits some
    low, high = wilson_interval(20, 20)
    assert 0.8 < low < 0.9 and high == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ParameterError, match="not a proportion"):
        wilson_interval(5, 4)


def test_group_bootstrap_resamples_whole_groups():
    # two groups, one all wrong and one all right: a resample holds both (0.5) or one of them twice (0 or 1)
    assert group_bootstrap_interval([0, 10], [10, 10]) == (0.0, 1.0)
    # groups that agree leave nothing to vary, however many segments each has
    assert group_bootstrap_interval([8, 4, 40], [10, 5, 50]) == pytest.approx((0.8, 0.8))
    # one group (or empty ones only besides it): nothing to resample
    assert group_bootstrap_interval([3], [4]) is None and group_bootstrap_interval([3, 0], [4, 0]) is None
    spread = group_bootstrap_interval([9, 5, 10, 2, 8, 7], [10, 10, 10, 10, 10, 9])
    assert spread == group_bootstrap_interval([9, 5, 10, 2, 8, 7], [10, 10, 10, 10, 10, 9])   # seeded
    pooled = 41 / 59
    assert spread[0] < pooled < spread[1] and 2 / 10 < spread[0] and spread[1] < 1.0
    # the same pooled figure over segments is narrower when groups differ this much
    w = wilson_interval(41, 59)
    assert spread[1] - spread[0] > w[1] - w[0]
    with pytest.raises(ParameterError, match="one value per group"):
        group_bootstrap_interval([1, 2], [3])


def test_group_interval_has_the_coverage_it_says():
    """40 groups of one segment, half right: a resample's accuracy is Binomial(40, 1/2) / 40, whose
    2.5 % and 97.5 % quantiles are 14/40 and 26/40 (and 15/40, 25/40 for a 90 % interval)."""
    from scipy.stats import binom

    lo, hi = binom.ppf([0.025, 0.975], 40, 0.5) / 40
    assert (lo, hi) == (0.35, 0.65)
    assert group_bootstrap_interval([1, 0] * 20, [1] * 40) == pytest.approx((lo, hi))
    assert group_bootstrap_interval([1, 0] * 20, [1] * 40, level=0.9) == pytest.approx(tuple(binom.ppf([0.05, 0.95], 40, 0.5) / 40))


def test_group_counts_round_a_recorded_accuracy_back_to_segments():
    # 1 of 3 is recorded as 0.3333: truncating 0.9999 would lose the segment
    correct, segments = group_counts({"g1": {"segments": 3, "accuracy": 0.3333}, "g2": {"segments": 7, "accuracy": 0.8571}})
    assert correct.tolist() == [1, 6] and segments.tolist() == [3, 7]


def test_evaluation_records_intervals_that_its_record_reproduces(tmp_path):
    labels = ("a", "b")
    groups = ["g1"] * 10 + ["g2"] * 10 + ["g3"] * 5
    right = np.array([True] * 9 + [False] + [True] * 5 + [False] * 5 + [True] * 5)   # 9/10, 5/10, 5/5
    y_true = np.arange(25) % 2
    pred = np.where(right, y_true, 1 - y_true)
    probs = np.where(pred[:, None] == 0, [[0.9, 0.1]], [[0.2, 0.8]]).astype(np.float32)
    ev = Evaluation(labels, y_true, probs, [f"f{i}" for i in range(25)], groups)
    assert ev.accuracy == pytest.approx(19 / 25)
    ci = ev.accuracy_intervals()
    assert ci["segments"] == pytest.approx(wilson_interval(19, 25))
    assert ci["groups"] == group_bootstrap_interval([9, 5, 5], [10, 10, 5])
    m = json.loads(json.dumps(ev.metrics()))
    assert m["accuracy_ci95"]["segments"] == pytest.approx(list(ci["segments"]), abs=1e-4)
    again = accuracy_intervals(m["per_group"])           # what `models show` does with a manifest
    assert again["segments"] == pytest.approx(ci["segments"]) and again["groups"] == ci["groups"]
    md = (write_report(ev, tmp_path / "r", title="t") / "report.md").read_text()
    lo, hi = ci["segments"]
    assert f"| as-is | 25 | 0.760 | {lo:.3f}–{hi:.3f} |" in md


def test_training_and_evaluation_import_no_tensorflow():
    code = ("import sys, audioclf_core.training, audioclf_core.evaluation\n"
            "print(','.join(m for m in ('tensorflow', 'keras', 'matplotlib', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_the_architecture_names_match_the_builders():
    from audioclf_core import architectures, training

    assert training.ARCHITECTURES == architectures.ARCHITECTURES


def test_bad_arguments_are_refused_before_any_work(dataset, tmp_path):
    with pytest.raises(ParameterError, match="unknown architecture 'transformer'"):
        train(dataset, out=tmp_path / "x", arch="transformer")
    with pytest.raises(ParameterError, match="unknown task preset 'asr'"):
        train(dataset, out=tmp_path / "x", preset="asr")
    with pytest.raises(ParameterError, match="needs --from"):
        train(dataset, out=tmp_path / "x", freeze_features=True)
    with pytest.raises(ParameterError, match="epochs=0"):
        train(dataset, out=tmp_path / "x", epochs=0)
    bad = [
        (dict(arch_kwargs={"width": -3}), "width=-3"), (dict(arch_kwargs={"dropout": 2.0}), "dropout=2.0"),
        (dict(max_windows_per_epoch=0), "max_windows_per_epoch=0"), (dict(learning_rate=-1.0), "learning_rate=-1.0"),
        (dict(learning_rate=float("nan")), "learning_rate=nan"), (dict(patience=-1), "patience=-1"),
        (dict(time_budget_s=0.0), "time_budget_s=0.0"), (dict(version="notaversion"), "'notaversion' is not a version"),
        (dict(search=1), "search=1: give 2 trials or more"), (dict(search=-2), "search=-2"),
        (dict(search=2, from_bundle="speech-music-noise"), "search does not apply to a fine-tune"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ParameterError, match=message):
            train(dataset, out=tmp_path / "x", **kwargs)
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputError, match="bundle folder .*afile is a file"):
        train(dataset, out=tmp_path / "afile")
    with pytest.raises(OutputError, match="cannot write the bundle folder .*afile/b"):
        train(dataset, out=tmp_path / "afile" / "b")
    with pytest.raises(OutputError, match="report folder .*afile is a file"):
        train(dataset, out=tmp_path / "x", report=tmp_path / "afile")
    # A report with nothing held out to report on: refused before any clip is read (these do not exist).
    gone = pd.DataFrame({"path": [str(tmp_path / f"gone{i}.wav") for i in range(6)], "label": ["speech", "music"] * 3,
                         "group": ["a", "b", "c", "d", "e", "f"]})
    with pytest.raises(ParameterError, match="no held-out groups for --report: the split of 6 groups holds none out"):
        train(gone, out=tmp_path / "x", report=tmp_path / "rep", test_fraction=0.0)
    with pytest.raises(ParameterError, match="search compares trials on validation groups, and the split of 6 groups has none"):
        train(gone, out=tmp_path / "x", search=2, val_fraction=0.0)  # refused before any clip is read, too
    with pytest.raises(ParameterError, match="none of the 6 clips .* could be decoded"):  # what reading them says
        train(gone, out=tmp_path / "x", report=tmp_path / "rep", test_groups=["a"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "rep").exists()


def test_data_with_some_of_the_presets_labels_trains_those_under_its_own_name(tmp_path):
    data = tmp_path / "hold-or-talk"
    for label, names in {"speech": ["speech_en_transfer.wav", "speech_en_digits_1.wav", "speech_en_queue-thereare.wav"],
                         "music": ["music_reno_project-system.wav", "music_macroform-the_simplicity.wav"]}.items():
        (data / label).mkdir(parents=True)
        for n in names:
            shutil.copy(DATA / n, data / label)
    result = train(data, out=tmp_path / "b", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                   batch_size=8, max_windows_per_epoch=16, test_groups=[str(data / "speech" / "speech_en_digits_1.wav"),
                   str(data / "music" / "music_macroform-the_simplicity.wav")], val_fraction=0.0, verbose=0, workers=1)
    b = load_bundle(tmp_path / "b")
    assert b.labels == ("speech", "music") and b.name == "hold-or-talk"
    assert result.model.output_shape[-1] == 2


def test_the_recorded_intervals_show_as_the_report_shows_them():
    # metrics() records the intervals; the console shows them to three digits from the record, the
    # report from the exact values: a record at four digits rounds twice and can differ by 0.001.
    from audioclf_core.evaluation import format_interval

    labels = ("a", "b")
    for n in range(300, 400):
        y_true = np.zeros(n, dtype=int)
        probs = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (n, 1))
        probs[:7] = [0.1, 0.9]  # seven wrong
        ev = Evaluation(labels, y_true, probs, [f"{i}.wav" for i in range(n)], [f"g{i % 5}" for i in range(n)])
        exact, recorded = ev.accuracy_intervals(), ev.metrics()["accuracy_ci95"]
        for over in ("segments", "groups"):
            assert format_interval(recorded[over]) == format_interval(exact[over]), (n, over)
