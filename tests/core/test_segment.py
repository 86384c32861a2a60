"""The silence splitter: known truth, pydub parity, streaming invariance."""

from __future__ import annotations

import numpy as np
import pytest
from pydub import AudioSegment
from pydub.silence import detect_nonsilent

from audioclf_core.errors import ParameterError
from audioclf_core.params import SilenceParams
from audioclf_core.segment import SegmentedStream, StreamingSegmenter, split_nonsilent

EXACT = dict(keep_silence_ms=0, min_segment_ms=0, max_segment_s=3600)


def _tone(rng, seconds, sr, level_dbfs):
    n = int(round(seconds * sr))
    f = rng.uniform(150, 2000)
    amp = 10 ** (level_dbfs / 20) * np.sqrt(2)
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr + rng.uniform(0, 6))).astype(np.float32)


def _quiet(rng, seconds, sr, level_dbfs=-75):
    return (rng.standard_normal(int(round(seconds * sr))) * 10 ** (level_dbfs / 20)).astype(np.float32)


def _signal(seed, sr, *, parts=8, min_gap_s=0.6):
    """Alternating sound/quiet parts; returns audio and the true sound spans (samples)."""
    rng = np.random.default_rng(seed)
    chunks, truth, pos = [], [], 0
    for i in range(parts):
        gap = _quiet(rng, rng.uniform(min_gap_s, 2.0), sr)
        sound = _tone(rng, rng.uniform(0.2, 3.0), sr, rng.uniform(-35, -6))
        chunks += [gap, sound]
        truth.append((pos + gap.size, pos + gap.size + sound.size))
        pos += gap.size + sound.size
    tail = _quiet(rng, 1.0, sr)
    return np.concatenate(chunks + [tail]), np.array(truth)


def _pydub_ranges(y, sr, *, min_silence_ms, threshold_dbfs):
    pcm = (np.clip(y, -1, 32767 / 32768) * 32768).astype("<i2")
    seg = AudioSegment(pcm.tobytes(), frame_rate=sr, sample_width=2, channels=1)
    return np.array(detect_nonsilent(seg, min_silence_len=int(min_silence_ms), silence_thresh=threshold_dbfs), dtype=float)


@pytest.mark.parametrize("seed", range(4))
def test_finds_known_sounds(seed):
    sr = 8000
    y, truth = _signal(seed, sr)
    got = split_nonsilent(y, sr=sr, params=SilenceParams(**EXACT))
    assert got.shape == truth.shape
    frame = int(0.010 * sr)
    assert np.abs(got - truth).max() <= frame


@pytest.mark.parametrize(
    "sr,min_silence_ms,threshold_dbfs,seed",
    [(8000, 500, -50, 0), (16000, 300, -40, 1), (16000, 1000, -45, 2), (44100, 700, -50, 3), (22050, 250, -30, 4)],
)
def test_matches_pydub_detect_nonsilent(sr, min_silence_ms, threshold_dbfs, seed):
    y, _ = _signal(seed, sr, parts=6, min_gap_s=min_silence_ms / 1000 + 0.05)
    ref_ms = _pydub_ranges(y, sr, min_silence_ms=min_silence_ms, threshold_dbfs=threshold_dbfs)
    params = SilenceParams(min_silence_ms=min_silence_ms, threshold_dbfs=threshold_dbfs, **EXACT)
    ours_ms = split_nonsilent(y, sr=sr, params=params) * 1000 / sr
    assert ours_ms.shape == ref_ms.shape, (ours_ms, ref_ms)
    # Within one analysis frame (10 ms), plus pydub's own 1 ms grid.
    assert np.abs(ours_ms - ref_ms).max() <= params.frame_ms + 1


def test_matches_pydub_on_gaps_near_min_silence():
    """Gaps just under and just over min_silence: pydub merges the first, splits the second."""
    sr, rng = 16000, np.random.default_rng(7)
    parts = [_quiet(rng, 0.5, sr), _tone(rng, 1.0, sr, -20), _quiet(rng, 0.45, sr), _tone(rng, 1.0, sr, -20),
             _quiet(rng, 0.56, sr), _tone(rng, 1.0, sr, -20), _quiet(rng, 0.5, sr)]
    y = np.concatenate(parts)
    ref = _pydub_ranges(y, sr, min_silence_ms=500, threshold_dbfs=-45)
    ours = split_nonsilent(y, sr=sr, params=SilenceParams(min_silence_ms=500, threshold_dbfs=-45, **EXACT)) * 1000 / sr
    assert len(ref) == 2 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 11


@pytest.mark.parametrize("block", [1, 37, 80, 1000, 4096, 10**6])
def test_block_size_does_not_change_decisions(block):
    sr = 8000
    y, _ = _signal(3, sr, parts=10)
    y = np.concatenate([y, _tone(np.random.default_rng(0), 7.3, sr, -20), _quiet(np.random.default_rng(1), 0.2, sr)])
    params = SilenceParams(max_segment_s=2.0, threshold_rel_db=-30)
    whole = split_nonsilent(y, sr=sr, params=params)
    seg = StreamingSegmenter(sr=sr, params=params)
    parts = [seg.push(y[i : i + block]) for i in range(0, y.size, block)] + [seg.flush()]
    assert np.array_equal(np.concatenate(parts), whole)


def test_long_sound_reports_every_max_segment():
    sr = 8000
    rng = np.random.default_rng(0)
    y = np.concatenate([_quiet(rng, 1, sr), _tone(rng, 10.0, sr, -20), _quiet(rng, 1, sr)])
    params = SilenceParams(max_segment_s=3.0, keep_silence_ms=100, min_segment_ms=0)
    seg = StreamingSegmenter(sr=sr, params=params)
    # The first 3-s piece is out long before the sound ends (live reporting).
    first = seg.push(y[: int(5 * sr)])
    assert first.shape == (1, 2)
    rest = np.concatenate([seg.push(y[int(5 * sr) :]), seg.flush()])
    got = np.concatenate([first, rest]) / sr
    starts = got[:, 0]
    # Pieces touch each other; padding only where the sound borders silence.
    assert np.allclose(got[:-1, 1], got[1:, 0])
    assert starts[0] == pytest.approx(0.9, abs=0.011)
    assert got[-1, 1] == pytest.approx(11.1, abs=0.011)
    lengths = np.diff(got, axis=1).ravel()
    # 3 s pieces; the first also carries its 0.1 s of left padding.
    assert lengths[:-1] == pytest.approx([3.1] + [3.0] * (len(lengths) - 2), abs=0.011)


def test_padding_stops_at_the_recordings_edges():
    sr = 8000
    rng = np.random.default_rng(3)
    # sound to the very end: no padding can follow it
    y = np.concatenate([_quiet(rng, 1.0, sr), _tone(rng, 1.0, sr, -20)])
    got = split_nonsilent(y, sr=sr, params=SilenceParams(keep_silence_ms=100, min_segment_ms=0))
    assert got.tolist() == [[int(0.9 * sr), y.size]]
    # and from the very start: none can precede it
    got = split_nonsilent(y[::-1].copy(), sr=sr, params=SilenceParams(keep_silence_ms=100, min_segment_ms=0))
    assert got.tolist() == [[0, int(1.1 * sr)]]


def test_a_sound_exactly_max_segment_long_is_one_padded_segment():
    sr = 8000
    rng = np.random.default_rng(4)
    y = np.concatenate([_quiet(rng, 1.0, sr), _tone(rng, 2.0, sr, -20), _quiet(rng, 1.0, sr)])
    params = SilenceParams(max_segment_s=2.0, keep_silence_ms=100, min_segment_ms=0)
    assert split_nonsilent(y, sr=sr, params=params).tolist() == [[int(0.9 * sr), int(3.1 * sr)]]
    # one frame (10 ms) longer and it is cut once, where the sound goes on
    y = np.concatenate([_quiet(rng, 1.0, sr), _tone(rng, 2.01, sr, -20), _quiet(rng, 1.0, sr)])
    assert split_nonsilent(y, sr=sr, params=params).tolist() == [[int(0.9 * sr), 3 * sr],
                                                                 [3 * sr, int(3.11 * sr)]]


def test_padding_short_drops_and_bounds():
    sr = 8000
    rng = np.random.default_rng(0)
    y = np.concatenate([_tone(rng, 0.05, sr, -20), _quiet(rng, 1.0, sr), _tone(rng, 1.0, sr, -20), _quiet(rng, 1.0, sr)])
    got = split_nonsilent(y, sr=sr, params=SilenceParams(keep_silence_ms=200, min_segment_ms=100)) / sr
    # The 50 ms blip at the very start is dropped; the 1 s tone gets 0.2 s each side.
    assert got.shape == (1, 2)
    assert got[0] == pytest.approx([0.85, 2.25], abs=0.011)


@pytest.mark.parametrize("frames, kept", [(10, True), (9, False)])
def test_a_sound_exactly_min_segment_long_is_kept(frames, kept):
    """min_segment_ms is the shortest segment kept: 100 ms of sound (10 frames) stays, 90 ms goes."""
    sr = 8000
    params = SilenceParams(min_segment_ms=100, keep_silence_ms=0, frame_ms=10)
    n = frames * sr // 100
    t = np.arange(n) / sr
    y = np.zeros(sr + n + sr, np.float32)  # a second of digital silence each side, frame-aligned
    y[sr : sr + n] = 0.3 * np.sin(2 * np.pi * 440 * t)
    got = split_nonsilent(y, sr=sr, params=params).tolist()
    assert got == ([[sr, sr + n]] if kept else [])


def test_relative_threshold_follows_the_recording_level():
    """A quiet archive: speech at -55 dBFS, floor at -85; an absolute -50 sees nothing."""
    sr = 8000
    rng = np.random.default_rng(2)
    y = np.concatenate([_tone(rng, 1, sr, -55), _quiet(rng, 1, sr, -85), _tone(rng, 1, sr, -55), _quiet(rng, 1, sr, -85)])
    assert split_nonsilent(y, sr=sr, params=SilenceParams(threshold_dbfs=-50)).size == 0
    rel = SilenceParams(threshold_dbfs=-90, threshold_rel_db=-20, **EXACT)
    got = split_nonsilent(y, sr=sr, params=rel) / sr
    assert got == pytest.approx(np.array([[0.0, 1.0], [2.0, 3.0]]), abs=0.011)


def test_silence_and_empty_input():
    sr = 16000
    assert split_nonsilent(np.zeros(sr * 3, np.float32), sr=sr).shape == (0, 2)
    assert split_nonsilent(np.zeros(0, np.float32), sr=sr).shape == (0, 2)
    # A sound shorter than min_silence is one segment, whole (as pydub keeps it).
    y = _tone(np.random.default_rng(0), 0.3, sr, -20)
    assert split_nonsilent(y, sr=sr, params=SilenceParams(**EXACT)).tolist() == [[0, y.size]]


@pytest.mark.parametrize("ms", [20, 150, 300, 490, 500, 800])
def test_a_recording_shorter_than_min_silence_is_judged_whole(ms):
    """pydub finds no silence in audio shorter than its window, so it would call a short quiet
    recording one sound; here the whole recording is the window."""
    sr, p = 8000, SilenceParams(min_silence_ms=500, threshold_dbfs=-50, min_segment_ms=10, keep_silence_ms=0)
    n = sr * ms // 1000
    quiet = np.full(n, 10 ** (-60 / 20), np.float32)  # -60 dBFS: under the threshold
    assert split_nonsilent(quiet, sr=sr, params=p).tolist() == []
    seg = StreamingSegmenter(sr=sr, params=p)
    seg.push(quiet)
    seg.flush()
    assert seg.sound_frames == 0
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
    assert split_nonsilent(tone, sr=sr, params=p).tolist() == [[0, n]]


@pytest.mark.parametrize("keep_ms", [0, 100])  # with padding, each segment's audio starts before its sound
def test_segmented_stream_returns_the_audio_and_stays_bounded(keep_ms):
    sr = 8000
    y, truth = _signal(5, sr, parts=12)
    params = SilenceParams(keep_silence_ms=keep_ms, min_segment_ms=0, max_segment_s=5.0)
    stream = SegmentedStream(sr=sr, params=params)
    got, peak = [], 0
    for i in range(0, y.size, 800):
        got += stream.push(y[i : i + 800])
        peak = max(peak, stream.buffered_samples)
    got += stream.flush()
    assert [[a, b] for a, b, _ in got] == split_nonsilent(y, sr=sr, params=params).tolist()
    assert len(got) >= 12
    for a, b, audio in got:
        assert b - a > 0 and np.array_equal(audio, y[a:b])
    # Never more than a max-length segment, its silence window and a block.
    assert peak <= (5.0 + 0.5 + 0.1) * sr + 800


@pytest.mark.parametrize(
    "kwargs",
    [dict(min_silence_ms=0), dict(threshold_dbfs=5), dict(keep_silence_ms=400, min_silence_ms=500), dict(max_segment_s=0),
     dict(frame_ms=20, min_silence_ms=10)],
)
def test_bad_parameters_are_refused_by_name(kwargs):
    with pytest.raises(ParameterError) as err:
        SilenceParams(**kwargs)
    assert next(iter(kwargs)) in str(err.value)


def test_the_defaults_are_the_documented_ones_and_typos_are_refused():
    p = SilenceParams()
    assert (p.min_silence_ms, p.threshold_dbfs, p.threshold_rel_db, p.keep_silence_ms, p.min_segment_ms,
            p.max_segment_s, p.frame_ms) == (500.0, -50.0, None, 100.0, 100.0, 30.0, 10.0)
    with pytest.raises(ParameterError, match="min_silence"):
        SilenceParams(min_silence=300)  # a typo in a manifest or an override must not pass silently
    with pytest.raises(ParameterError, match="max_segment_s"):
        SilenceParams(max_segment_s=0.05, min_segment_ms=100)  # every piece would be dropped as too short


def test_options_left_unset_keep_the_models_values_and_zero_is_a_value():
    from audioclf_core.params import given

    assert given(keep_silence_ms=0, threshold_dbfs=None, min_segment_ms=0.0) == {"keep_silence_ms": 0, "min_segment_ms": 0.0}
    assert SilenceParams().replace(**given(keep_silence_ms=0, min_silence_ms=None)).keep_silence_ms == 0


def test_bad_calls():
    with pytest.raises(ParameterError, match="sr"):
        StreamingSegmenter(sr=0)
    seg = StreamingSegmenter(sr=8000)
    with pytest.raises(ParameterError, match="1-D"):
        seg.push(np.zeros((10, 2), np.float32))
    seg.flush()
    with pytest.raises(ParameterError, match="after flush"):
        seg.push(np.zeros(10, np.float32))
