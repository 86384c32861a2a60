"""The whole path on real recordings with known truth, and on bad input."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioclf_core.bundle import MANIFEST, load_bundle
from audioclf_core.errors import ParameterError
from audioclf_core.pipeline import MIX, Classifier, pool_windows
from audioclf_core.results import recording_columns, segment_columns

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples"
TRUTH = json.loads((SAMPLES / "truth.json").read_text())


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("placeholder")


@pytest.fixture(scope="module")
def clf(bundle):
    return Classifier(bundle)


def _truth(recording, channel):
    return sorted((p["start_s"], p["end_s"]) for p in TRUTH["parts"] if p["recording"] == recording and p["channel"] == channel)


def _mix_truth(recording):
    """Sound in the mono mix: the union of all channels' parts."""
    spans = sorted((p["start_s"], p["end_s"]) for p in TRUTH["parts"] if p["recording"] == recording)
    merged = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _assert_segments_match(got, truth, *, pad):
    """One segment per true part; boundaries within padding + a fade + a frame."""
    assert len(got) == len(truth), (got, truth)
    for (gs, ge), (ts, te) in zip(got, truth):
        assert ts - pad - 0.011 <= gs <= ts + 0.15, (gs, ts)
        assert te - 0.25 <= ge <= te + pad + 0.011, (ge, te)


@pytest.mark.parametrize("name", sorted(TRUTH["recordings"]))
def test_sample_recordings_segment_where_the_truth_says(clf, bundle, name):
    meta = TRUTH["recordings"][name]
    if meta["channels"] > 1:
        # The mono mix is the channels' mean: a voice on one leg of a call is
        # 6 dB quieter in it, so a pause that stays above the threshold on its
        # own leg can fall below it. Lower the threshold by the same amount.
        loss_db = 20 * np.log10(meta["channels"])
        clf = Classifier(bundle, silence=clf.silence.replace(threshold_dbfs=clf.silence.threshold_dbfs - loss_db))
    out = clf.classify_one(str(SAMPLES / name))
    assert out.status == "ok", out.error
    assert out.sample_rate == meta["sample_rate"] and out.channels == meta["channels"]
    assert out.duration_s == pytest.approx(meta["duration_s"], abs=1e-3)
    got = [(s, e) for ch, _, s, e, _ in out.segments]
    assert {ch for ch, *_ in out.segments} == {MIX}
    _assert_segments_match(got, _mix_truth(name), pad=clf.silence.keep_silence_ms / 1000)
    covered = sum(e - s for s, e in got)
    assert out.silence_s == pytest.approx(out.duration_s - covered)
    for _, _, _, _, probs in out.segments:
        assert probs.shape == (3,) and probs.sum() == pytest.approx(1, abs=1e-4)


def test_split_channels_follow_each_leg(bundle):
    name = "call-002-stereo.wav"
    out = Classifier(bundle, channels="split", block_s=2.0).classify_one(str(SAMPLES / name))  # legs found block by block
    assert out.status == "ok"
    for ch in (0, 1):
        got = [(s, e) for c, _, s, e, _ in out.segments if c == ch]
        _assert_segments_match(got, _truth(name, ch), pad=0.1)
        assert [i for c, i, *_ in out.segments if c == ch] == list(range(len(got)))
    keys = [(c, i) for c, i, *_ in out.segments]
    assert keys == sorted(keys) and {c for c, _ in keys} == {0, 1}  # leg by leg, in order, though found interleaved
    # silence is counted per leg: two channels of duration, less what the segments cover
    covered = sum(e - s for _, _, s, e, _ in out.segments)
    assert out.analysed_channels == 2 and out.silence_s == pytest.approx(2 * out.duration_s - covered)


def test_the_same_audio_at_other_rates_and_formats_segments_the_same(clf, tmp_path):
    y, sr = sf.read(SAMPLES / "call-001.wav", dtype="float32")
    import soxr

    base = [(s, e) for _, _, s, e, _ in clf.classify_one(str(SAMPLES / "call-001.wav")).segments]
    for rate, ext, subtype in [(16000, "flac", "PCM_16"), (44100, "wav", "FLOAT"), (48000, "wav", "PCM_24")]:
        path = tmp_path / f"c.{rate}.{ext}"
        sf.write(path, soxr.resample(y, sr, rate), rate, subtype=subtype)
        got = [(s, e) for _, _, s, e, _ in clf.classify_one(str(path)).segments]
        assert len(got) == len(base)
        assert np.abs(np.array(got) - np.array(base)).max() <= 0.021  # two frames: resampler ringing


def _outcomes_equal(a, b):
    assert (a.recording, a.status, a.error, a.n_segments) == (b.recording, b.status, b.error, b.n_segments)
    for sa, sb in zip(a.segments, b.segments):
        assert sa[:4] == sb[:4]
        np.testing.assert_allclose(sa[4], sb[4], atol=1e-5)


def test_batching_pools_recordings_and_does_not_change_answers(bundle):
    files = [str(SAMPLES / n) for n in sorted(TRUTH["recordings"])]
    big = Classifier(bundle, batch_windows=4096)
    calls = []
    real = big.segment_probs

    def counting(windows, powers=None):
        calls.append(sum(len(w) for w in windows))
        return real(windows, powers)

    big.segment_probs = counting
    pooled = list(big.classify(files))
    n_segments = sum(o.n_segments for o in pooled)
    assert len(calls) == 1 and n_segments > 20  # every segment of every file in one forward pass
    one_by_one = list(Classifier(bundle, batch_windows=1).classify(files))
    for a, b in zip(pooled, one_by_one):
        _outcomes_equal(a, b)


class _FinishOrder(Classifier):
    """A classifier that notes the order in which its decoding threads finish recordings."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.finished = []

    def _front(self, uri):
        yield from super()._front(uri)
        self.finished.append(uri)


def test_parallel_decoding_keeps_input_order_errors_and_answers(bundle, bad_inputs, tmp_path):
    good, cases = bad_inputs
    y, sr = sf.read(SAMPLES / "call-001.wav", dtype="float32")
    long = _write(tmp_path / "long.wav", np.tile(y, 20), sr)  # the first thread is busy with it ...
    others = [str(SAMPLES / n) for n in sorted(TRUTH["recordings"]) if str(SAMPLES / n) != good]
    files = [long, good, *cases, *others]  # ... while the others go on
    one = list(Classifier(bundle, workers=1).classify(files))
    par = _FinishOrder(bundle, workers=3, batch_windows=64)
    many = list(par.classify(files))
    assert par.finished != files and par.finished.index(long) > 1  # they did finish out of order
    assert [o.recording for o in many] == files  # yet the outcomes come in input order
    for a, b in zip(one, many):
        _outcomes_equal(a, b)
    assert sum(o.status == "error" for o in many) == sum(v[0] == "error" for v in cases.values())
    assert many[0].status == "ok" and many[0].n_segments > 100


@pytest.mark.parametrize("workers", [1, 2])
def test_a_recording_given_twice_is_refused(bundle, workers):
    uri = str(SAMPLES / "call-004-ulaw.wav")
    gen = Classifier(bundle, workers=workers).classify([uri, str(SAMPLES / "call-001.wav"), uri])
    with pytest.raises(ParameterError, match="call-004-ulaw.wav was given twice"):
        list(gen)


def test_closing_the_results_early_stops_the_decoding_threads(bundle, tmp_path):
    import shutil
    import threading

    files = [shutil.copy(SAMPLES / "call-001.wav", tmp_path / f"call-{i:02d}.wav") for i in range(30)]
    files = [str(f) for f in files]  # more segments than the queue holds: the threads wait on it
    gen = Classifier(bundle, workers=3, batch_windows=1).classify(files)
    assert next(gen).recording == files[0]
    gen.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("audioclf-decode")]


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2"])
def test_workers_must_be_a_whole_number_from_one(bundle, workers):
    with pytest.raises(ParameterError, match="workers"):
        Classifier(bundle, workers=workers)


def _write(path, y, sr, **kw):
    sf.write(path, y, sr, **kw)
    return str(path)


@pytest.fixture
def bad_inputs(tmp_path):
    """Every kind of bad input the archive will hold, with the reason each must give."""
    rng = np.random.default_rng(0)
    good = str(SAMPLES / "call-004-ulaw.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "header.wav").write_bytes((SAMPLES / "call-001.wav").read_bytes()[:20])
    (tmp_path / "random.wav").write_bytes(rng.bytes(5000))
    (tmp_path / "notes.txt").write_text("call notes, not audio\n" * 20)
    nan = rng.standard_normal(8000).astype(np.float32) * 0.1
    nan[4000] = np.nan
    inf = nan.copy()
    inf[4000] = np.inf
    cases = {
        str(tmp_path / "empty.wav"): ("error", "empty"),
        str(tmp_path / "header.wav"): ("error", "header.wav"),
        str(tmp_path / "random.wav"): ("error", "random.wav"),
        str(tmp_path / "notes.txt"): ("error", "not an audio file"),
        _write(tmp_path / "silence.wav", np.zeros(8000 * 5, np.float32), 8000): ("ok", None),
        _write(tmp_path / "blip.wav", nan[:400] * 0 + 0.3, 8000): ("error", "too short"),
        # Silence shorter than a segment, or than min_silence_ms: ok, no segments, all silence.
        _write(tmp_path / "silent-50ms.wav", np.zeros(400, np.float32), 8000): ("ok", None),
        _write(tmp_path / "silent-300ms.wav", np.zeros(2400, np.float32), 8000): ("ok", None),
        _write(tmp_path / "nan.wav", nan, 8000, subtype="FLOAT"): ("error", "NaN"),
        _write(tmp_path / "inf.wav", inf, 8000, subtype="FLOAT"): ("error", "inf"),
        str(tmp_path / "missing.wav"): ("error", "no such file"),
        "memory://archive/none.wav": ("error", "no such file"),
    }
    return good, cases


def test_bad_input_becomes_error_rows_and_the_batch_carries_on(clf, bad_inputs):
    good, cases = bad_inputs
    uris = [good] + list(cases) + [good.replace("004", "001").replace("-ulaw", "")]
    outcomes = list(clf.classify(uris))
    assert [o.recording for o in outcomes] == uris
    assert outcomes[0].status == "ok" and outcomes[0].n_segments == 4
    assert outcomes[-1].status == "ok" and outcomes[-1].n_segments == 9
    for out in outcomes[1:-1]:
        status, reason = cases[out.recording]
        assert out.status == status, (out.recording, out.error)
        if status == "error":
            assert reason.lower() in out.error.lower(), out.error
            assert out.recording.rsplit("/", 1)[-1] in out.error  # names the file
            assert out.n_segments == 0 and "\n" not in out.error
            assert not out.retryable  # the recording's fault: another try would fail the same way
    for name, seconds in (("silence.wav", 5.0), ("silent-50ms.wav", 0.05), ("silent-300ms.wav", 0.3)):
        silent = next(o for o in outcomes if o.recording.endswith(name))
        assert silent.n_segments == 0 and silent.silence_s == pytest.approx(seconds)


@pytest.mark.parametrize("sr", [22050, 44100, 96000])
def test_a_sound_that_runs_to_the_end_ends_with_the_recording(clf, tmp_path, sr):
    # 1.23456 s at these rates is not a whole number of 8 kHz samples: the resampled
    # signal is a fraction of a sample longer than the recording.
    n = int(sr * 1.23456) + 1
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(n) / sr)
    path = _write(tmp_path / f"tone-{sr}.wav", tone.astype(np.float32), sr, subtype="FLOAT")
    out = clf.classify_one(path)
    assert out.status == "ok" and out.duration_s == pytest.approx(n / sr)
    last_end = max(end for *_, end, _ in out.segments)
    assert n / sr - 1 / clf.bundle.sample_rate <= last_end <= n / sr  # within one model sample, never past
    segments, recordings = clf.tables([out])
    row = recordings.iloc[0]
    assert (segments.end_s <= row.duration_s).all()
    total = sum(row[f"{lab}_s"] for lab in clf.bundle.labels) + row.silence_s
    assert total == pytest.approx(row.duration_s, abs=1e-9)


def test_a_file_refused_at_its_header_keeps_the_headers_facts_in_its_row(clf, tmp_path):
    # As a cut FLAC's or MP3's row gives the duration its header claims, so does a cut WAV's;
    # a rate out of range is named in the reason and kept in the row.
    full = tmp_path / "full.wav"
    sf.write(full, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 8000 * 2])  # one of two seconds
    slow = tmp_path / "slow.wav"
    sf.write(slow, np.zeros(2000, dtype=np.float32), 500)
    outs = {Path(o.recording).name: o for o in clf.classify([str(cut), str(slow)])}
    segments, recordings = clf.tables(outs.values())
    rows = recordings.assign(name=recordings.recording.map(lambda r: Path(r).name)).set_index("name")
    assert rows.loc["cut.wav", "status"] == "error" and "truncated" in rows.loc["cut.wav", "error"]
    assert (rows.loc["cut.wav", "sample_rate"], rows.loc["cut.wav", "channels"]) == (8000, 1)
    assert rows.loc["cut.wav", "duration_s"] == pytest.approx(2.0)
    assert rows.loc["slow.wav", "status"] == "error" and "500 Hz" in rows.loc["slow.wav", "error"]
    assert rows.loc["slow.wav", "sample_rate"] == 500 and rows.loc["slow.wav", "duration_s"] == pytest.approx(4.0)
    assert rows.loc["cut.wav", "source_size"] == cut.stat().st_size


def test_a_recording_that_fails_part_way_keeps_no_segments(bundle, tmp_path):
    """Segments found before the failure must not reach the tables beside its error row."""
    y, sr = sf.read(SAMPLES / "call-001.wav", dtype="float32")
    y[-100] = np.nan
    path = _write(tmp_path / "late-nan.wav", y, sr, subtype="FLOAT")
    out = Classifier(bundle, block_s=1.0, batch_windows=100_000).classify_one(path)
    assert out.status == "error" and "NaN" in out.error
    assert out.n_segments == 0 and out.covered_s == 0
    segments, recordings = Classifier(bundle).tables([out])
    assert len(segments) == 0 and recordings.status.tolist() == ["error"]
    # the header told its length, but its sound was not all heard: no seconds of silence or of any label
    row = recordings.iloc[0]
    assert row.duration_s == pytest.approx(len(y) / sr)
    assert all(pd.isna(row[f"{lab}_s"]) for lab in (*bundle.labels, "silence"))


def test_an_unreachable_store_is_retryable_and_a_bad_file_is_not(bundle):
    nowhere = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"},
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    out = Classifier(bundle, storage_options=nowhere).classify_one("s3://archive/call.wav")
    assert out.status == "error" and out.retryable, out.error
    assert "s3://archive/call.wav" in out.error and "\n" not in out.error


def test_tables_follow_the_result_contract(clf, bundle, bad_inputs):
    good, cases = bad_inputs
    outcomes = list(clf.classify([good, *cases]))
    segments, recordings = clf.tables(outcomes)
    assert list(segments.columns) == segment_columns(bundle.labels)
    assert list(recordings.columns) == recording_columns(bundle.labels)
    assert len(recordings) == 1 + len(cases) and set(segments.recording) == {good}
    ok = recordings.set_index("recording").loc[good]
    label_total = sum(ok[f"{lab}_s"] for lab in bundle.labels)
    assert label_total + ok.silence_s == pytest.approx(ok.duration_s)
    assert (segments.model_sha256 == bundle.sha256).all()
    # The file's identity and the parameters travel with the row (what flows skip on).
    assert ok.source_size == Path(good).stat().st_size and ok.source_etag
    # So do an error row's, wherever the storage described the file before it failed: which
    # version of the file failed, and what a flow's re-run compares to skip it.
    by_uri = recordings.set_index("recording")
    for uri in cases:
        row = by_uri.loc[uri]
        if uri.startswith("memory://") or not Path(uri).exists():
            assert pd.isna(row.source_size) and pd.isna(row.source_etag)
            continue
        assert row.source_size == Path(uri).stat().st_size, uri
        assert row.source_etag == str(Path(uri).stat().st_mtime), uri
    assert (recordings.params_sha256 == clf.params_sha256).all()
    assert Classifier(bundle, channels="split").params_sha256 != clf.params_sha256
    assert ((segments.confidence >= 1 / 3) & (segments.confidence <= 1)).all()
    # each row's label, confidence and p_ columns are its segment's probabilities, in the bundle's order
    P = segments[[f"p_{lab}" for lab in bundle.labels]].to_numpy()
    np.testing.assert_allclose(P, np.stack([probs for *_, probs in outcomes[0].segments]), rtol=1e-6)
    assert (segments.label.to_numpy() == np.array(bundle.labels)[P.argmax(axis=1)]).all()
    np.testing.assert_allclose(segments.confidence, P.max(axis=1), rtol=1e-6)
    seconds = segments.end_s - segments.start_s
    for lab in bundle.labels:
        assert ok[f"{lab}_s"] == pytest.approx(seconds[segments.label == lab].sum())


def test_multichannel_mix_and_split(bundle, tmp_path):
    sr, rng = 16000, np.random.default_rng(1)
    y = np.zeros((sr * 6, 6), np.float32)
    for ch in range(6):  # channel ch sounds from ch s to ch+0.5 s
        y[ch * sr : ch * sr + sr // 2, ch] = rng.standard_normal(sr // 2) * 0.2
    path = _write(tmp_path / "six.wav", y, sr)
    split = Classifier(bundle, channels="split").classify_one(path)
    assert sorted({c for c, *_ in split.segments}) == list(range(6))
    for c, _, s, e, _ in split.segments:
        assert s == pytest.approx(c - 0.1, abs=0.011) or (c == 0 and s == 0.0)
    mix = Classifier(bundle).classify_one(path)
    assert {c for c, *_ in mix.segments} == {MIX} and mix.channels == 6


def _peak_allocation(clf, path):
    tracemalloc.start()
    out = clf.classify_one(str(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, peak


def test_one_hour_recording_runs_in_bounded_memory(clf, tmp_path):
    """numpy's peak allocation is flat in the recording's length.

    An hour at 16 kHz is 230 MB of float32 samples; the pipeline's peak is
    set by one block and one inference batch, the same for 18 minutes as for
    an hour.
    """
    sr = 8000
    tone = (0.2 * np.sin(2 * np.pi * 300 * np.arange(sr * 2) / sr)).astype(np.float32)
    unit = np.concatenate([tone, np.zeros(sr, np.float32)])  # 2 s sound, 1 s silence
    # 18 minutes already fill a whole inference batch: from there on, nothing grows.
    for name, repeats in (("short.wav", 360), ("hour.wav", 1200)):
        with sf.SoundFile(tmp_path / name, "w", sr, 1, subtype="PCM_16") as f:
            for _ in range(repeats):
                f.write(unit)
    clf.classify_one(str(SAMPLES / "call-004-ulaw.wav"))  # warm the model outside the measurement
    short, short_peak = _peak_allocation(clf, tmp_path / "short.wav")
    hour, hour_peak = _peak_allocation(clf, tmp_path / "hour.wav")
    assert short.n_segments == 360 and hour.n_segments == 1200
    assert hour.duration_s == pytest.approx(3600)
    assert hour_peak < 1.25 * short_peak, (hour_peak, short_peak)
    assert hour_peak < 120e6, f"peak numpy/Python allocation {hour_peak / 1e6:.0f} MB"


def test_tallies_count_outcomes_and_add_up(clf, bundle, bad_inputs):
    from audioclf_core.pipeline import Tally

    good, cases = bad_inputs
    outcomes = list(clf.classify([good, *list(cases)[:3]]))
    whole, halves = Tally(), [Tally(), Tally()]
    for i, out in enumerate(outcomes):
        whole.add(out, bundle.labels)
        halves[i % 2].add(out, bundle.labels)
    assert (whole.recordings, whole.failed) == (4, 3)
    assert whole.segments == outcomes[0].n_segments == sum(whole.label_segments.values())
    assert sum(whole.label_s.values()) == pytest.approx(outcomes[0].duration_s - outcomes[0].silence_s)
    assert [uri for uri, _ in whole.failures] == [o.recording for o in outcomes[1:]]
    assert whole.audio_s == pytest.approx(outcomes[0].duration_s)  # whole recordings, silence included
    winners = [bundle.labels[int(np.argmax(p))] for *_, p in outcomes[0].segments]
    assert whole.label_segments == {lab: winners.count(lab) for lab in set(winners)}
    for lab in set(winners):
        assert whole.label_s[lab] == pytest.approx(sum(e - s for (_, _, s, e, _), w in zip(outcomes[0].segments, winners)
                                                       if w == lab))
    merged = Tally()
    for h in halves:
        merged.merge(h)
    assert (merged.recordings, merged.failed, merged.segments) == (whole.recordings, whole.failed, whole.segments)
    assert merged.audio_s == pytest.approx(whole.audio_s)
    assert merged.label_s == pytest.approx(whole.label_s) and merged.label_segments == whole.label_segments
    assert sorted(merged.failures) == sorted(whole.failures)


def test_pooling_by_energy_weighs_each_window_by_its_power():
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]], np.float32)
    # Two windows of room noise at -40 dBFS, one of a syllable at -10 dBFS (30 dB: 1000x the power).
    power = np.array([1e-4, 1e-4, 1e-1])
    np.testing.assert_allclose(pool_windows(probs, power, "mean"), probs.mean(axis=0), rtol=1e-6)
    got = pool_windows(probs, power, "energy")
    np.testing.assert_allclose(got, (1e-3 * probs[0] + 1e-3 * probs[1] + probs[2]) / 1.002, rtol=1e-5)
    assert got.argmax() == 0 and probs.mean(axis=0).argmax() == 1  # the syllable decides, not the hiss
    # Equal powers, and a segment that is digital silence throughout, pool as the mean.
    np.testing.assert_allclose(pool_windows(probs, np.full(3, 0.2), "energy"), probs.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pool_windows(probs, np.zeros(3), "energy"), probs.mean(axis=0), rtol=1e-6)
    with pytest.raises(ParameterError, match="one power per window"):
        pool_windows(probs, power[:2], "energy")
    with pytest.raises(ParameterError, match="pooling='max'"):
        pool_windows(probs, power, "max")


def test_the_bundles_pooling_decides_segments_and_their_result_hash(bundle, tmp_path):
    """A quiet lead-in and a loud call in one segment: the pipeline weighs windows by the
    power of the audio it cut them from, and re-runs see that the answers changed."""
    import shutil

    energy_dir = tmp_path / "energy"
    shutil.copytree(bundle.path, energy_dir)
    data = json.loads((energy_dir / MANIFEST).read_text())
    assert "pooling" not in data  # written before pooling existed: it pools by the mean
    data["pooling"] = "energy"
    (energy_dir / MANIFEST).write_text(json.dumps(data))
    energy = load_bundle(energy_dir)
    assert bundle.pooling == "mean" and energy.pooling == "energy"

    sr = bundle.sample_rate
    rng = np.random.default_rng(0)
    call, rate = sf.read(SAMPLES / "call-001.wav", dtype="float32")
    import soxr

    loud = soxr.resample(call[: int(1.5 * rate)], rate, sr).astype(np.float32)
    loud = loud / np.abs(loud).max() * np.float32(0.5)
    # Hiss at -40 dBFS (above the silence threshold) for 3 s, then on under the call.
    y = np.concatenate([np.zeros(3 * sr, np.float32), loud])
    y += (rng.standard_normal(len(y)) * 0.01).astype(np.float32)
    path = _write(tmp_path / "lead-in.wav", y, sr)

    seg_mean = Classifier(bundle).classify_one(path).segments
    seg_energy = Classifier(energy).classify_one(path).segments
    assert len(seg_mean) == len(seg_energy) == 1  # one segment: the hiss never falls silent
    _, _, start, end, p_energy = seg_energy[0]
    piece = y[int(round(start * sr)) : int(round(end * sr))]
    fx, win, hop = bundle.features, bundle.window_samples, bundle.hop_samples
    windows = fx.windows(piece, window=win, hop=hop)
    power = fx.window_power(piece, window=win, hop=hop)
    assert len(windows) >= 6 and power.max() > 100 * power.min()
    probs = Classifier(bundle).predictor(windows)
    np.testing.assert_allclose(seg_mean[0][4], probs.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(p_energy, (power / power.max()) @ probs / (power / power.max()).sum(), atol=1e-5)
    assert np.abs(p_energy - seg_mean[0][4]).max() > 1e-3
    assert Classifier(bundle).params_sha256 != Classifier(energy).params_sha256
