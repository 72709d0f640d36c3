"""The chunker: chunked equals whole (identity, rate change, a model with context), exact
output length, recovery from out-of-memory errors (injected: there is no GPU in the tests),
and the chunk size chosen from free memory."""
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from restore.models.chunking import ModelCost, OomPolicy, choose_chunking, overlap_add, plan_chunks


class OutOfMemory(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError."""


def identity(b):
    return b.copy()


def noise(channels, frames, seed=0):
    return np.random.default_rng(seed).standard_normal((channels, frames)).astype(np.float32)


def expected_frames(frames, rate_in, rate_out):
    return int(Fraction(frames * rate_out, rate_in) + Fraction(1, 2))  # round half up


# A 31-tap windowed-sinc lowpass at an eighth of the rate: a model that looks 15 samples either side.
_TAPS = np.sinc(np.arange(-15, 16) / 4) * np.hamming(31)
_TAPS /= _TAPS.sum()


def fir(b):
    return np.stack([np.convolve(row.astype(np.float64), _TAPS, mode="same") for row in b]).astype(np.float32)


def interpolator(rate_in, rate_out):
    """Linear interpolation of each item to rate_out at positions n * rate_in / rate_out within
    the item, extrapolating past its last sample: exact for a ramp."""
    def model(b):
        n_in = b.shape[1]
        n_out = n_in * rate_out // rate_in
        pos = np.arange(n_out) * (rate_in / rate_out)
        i0 = np.minimum(np.floor(pos).astype(int), n_in - 2)
        frac = pos - i0
        v = b.astype(np.float64)
        return (v[:, i0] + frac * (v[:, i0 + 1] - v[:, i0])).astype(np.float32)
    return model


class Recorder:
    """Wraps a model; records the shape of each call and can fail on chosen calls or sizes."""

    def __init__(self, model, fail_over=None, fail_calls=(), poison=None):
        self.model, self.fail_over, self.fail_calls, self.poison = model, fail_over, set(fail_calls), poison
        self.shapes = []

    def __call__(self, b):
        self.shapes.append(b.shape)
        if self.fail_over is not None and len(b) > self.fail_over:
            raise OutOfMemory(f"{len(b)} items")
        if len(self.shapes) in self.fail_calls:
            raise OutOfMemory(f"call {len(self.shapes)}")
        if self.poison is not None and any(np.array_equal(row, self.poison) for row in b):
            raise OutOfMemory("this chunk never fits")
        return self.model(b)


def policy(fallback=None):
    freed = []
    oom = OomPolicy(is_oom=lambda e: isinstance(e, OutOfMemory), free=lambda: freed.append(1), fallback=fallback)
    return oom, freed


# --- geometry ---------------------------------------------------------------------------------


def test_plan_rounds_to_the_rate_quantum():
    p = plan_chunks(44100 * 60, rate_in=44100, rate_out=48000, chunk_seconds=12, overlap_seconds=0.5)
    assert (p.chunk_in, p.overlap_in, p.chunk_out, p.overlap_out) == (529200, 22050, 576000, 24000)
    p = plan_chunks(44100 * 60, rate_in=44100, rate_out=48000, chunk_seconds=1.001, overlap_seconds=0.01)
    assert (p.chunk_in, p.overlap_in) == (301 * 147, 3 * 147)        # 300.3 and 3.0 quanta, rounded up
    assert (p.chunk_out, p.overlap_out) == (301 * 160, 3 * 160)
    p = plan_chunks(10, rate_in=44100, rate_out=48000, chunk_seconds=12, overlap_seconds=0.5)
    assert (p.count, p.chunk_in, p.overlap_in) == (1, 147, 0)           # not padded to 12 s
    with pytest.raises(ValueError, match="more than half"):
        plan_chunks(1000, rate_in=1000, rate_out=1000, chunk_seconds=0.1, overlap_seconds=0.051)
    assert plan_chunks(0, rate_in=1000, rate_out=1000, chunk_seconds=0.1, overlap_seconds=0.01).count == 0


def test_a_short_song_is_one_chunk_of_its_own_length():
    m = Recorder(identity)
    x = noise(2, 44100)
    y = overlap_add(x, m, rate_in=44100, rate_out=44100, chunk_seconds=12, overlap_seconds=0.5)
    assert m.shapes == [(2, 44100)]
    assert np.array_equal(y, x)
    stats = {}
    empty = overlap_add(np.zeros((2, 0), np.float32), m, rate_in=44100, rate_out=48000, chunk_seconds=12,
                        overlap_seconds=0.5, stats=stats)
    assert empty.shape == (2, 0) and len(m.shapes) == 1 and stats["calls"] == 0


# --- chunked equals whole ---------------------------------------------------------------------

CHUNK = 250  # frames at 1000 Hz


@pytest.mark.parametrize("overlap", [0, 11, 124, 125])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("batch_items", [1, 2, 5])
def test_identity_is_reproduced_exactly(overlap, channels, batch_items):
    hop = CHUNK - overlap
    for frames in [1, 100, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + 3 * hop + 17, CHUNK + 5 * hop - 1, CHUNK + 6 * hop]:
        x = noise(channels, frames, seed=frames)
        m = Recorder(identity)
        y = overlap_add(x, m, rate_in=1000, rate_out=1000, chunk_seconds=CHUNK / 1000, overlap_seconds=overlap / 1000,
                        batch_items=batch_items)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.array_equal(y, x), (frames, overlap, channels, batch_items)
        plan = plan_chunks(frames, rate_in=1000, rate_out=1000,
                           chunk_seconds=CHUNK / 1000, overlap_seconds=overlap / 1000)
        assert sum(s[0] for s in m.shapes) == plan.count * channels               # every item once
        assert all(s[0] <= batch_items and s[1] == plan.chunk_in for s in m.shapes)


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 48000), (22050, 48000), (48000, 44100)])
@pytest.mark.parametrize("overlap", [0.0, 0.0171])
def test_rate_change_puts_every_seam_in_place(rate_in, rate_out, overlap):
    """A ramp through a model that interpolates each chunk: any seam off by one output
    sample shows as a jump of one ramp step (about 4e-5 here), far above the tolerance."""
    frames = int(rate_in * 0.7) + 13
    slopes = np.array([[1.0], [-0.5]])
    x = (slopes * np.arange(frames) / frames).astype(np.float32)
    # Lengths that are not whole quanta (147 frames at 44.1 kHz): rounded up, seams still in place.
    y = overlap_add(x, interpolator(rate_in, rate_out), rate_in=rate_in, rate_out=rate_out,
                    chunk_seconds=0.1013, overlap_seconds=overlap, batch_items=3)
    n = expected_frames(frames, rate_in, rate_out)
    assert y.shape == (2, n)
    want = slopes * (np.arange(n) * rate_in / rate_out) / frames
    q_out = rate_out // np.gcd(rate_in, rate_out)
    # The last q_out frames interpolate towards the zero padding past the end.
    np.testing.assert_allclose(y[:, :n - q_out], want[:, :n - q_out], rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate_in,rate_out",
                         [(44100, 48000), (48000, 44100), (22050, 48000), (2000, 1000), (48000, 16000)])
def test_output_length_is_exact(rate_in, rate_out):
    model = interpolator(rate_in, rate_out)
    for frames in [1, 2, 3, 99, 100, 147, 161, rate_in // 10 - 1, rate_in // 10, rate_in // 10 + 1, rate_in // 3 + 7]:
        y = overlap_add(noise(1, frames), model, rate_in=rate_in, rate_out=rate_out,
                        chunk_seconds=0.1, overlap_seconds=0.01)
        assert y.shape == (1, expected_frames(frames, rate_in, rate_out)), frames
    # Half a frame rounds up: 3 frames at 2 kHz are 1.5 at 1 kHz.
    assert overlap_add(noise(1, 3), model if rate_in == 2000 else interpolator(2000, 1000), rate_in=2000, rate_out=1000,
                       chunk_seconds=0.1, overlap_seconds=0.01).shape == (1, 2)


def smooth_signal(frames, rate):
    t = np.arange(frames) / rate
    # Frequencies with no common period in whole samples, so no two chunks are the same.
    return np.stack([0.4 * np.sin(2 * np.pi * 50.3 * t) + 0.2 * np.sin(2 * np.pi * 131.7 * t + 1),
                     0.3 * np.sin(2 * np.pi * 70.9 * t + 2)]).astype(np.float32)


@pytest.mark.parametrize("overlap", [0.0, 0.05])
@pytest.mark.parametrize("batch_items", [2, 3])
def test_model_with_context_matches_whole_signal(overlap, batch_items):
    rate, frames = 8000, 8000 * 13 // 10 + 7
    x = smooth_signal(frames, rate)
    whole = fir(x)
    y = overlap_add(x, fir, rate_in=rate, rate_out=rate, chunk_seconds=0.2, overlap_seconds=overlap,
                    batch_items=batch_items)
    plan = plan_chunks(frames, rate_in=rate, rate_out=rate, chunk_seconds=0.2, overlap_seconds=overlap)
    edges = [e for k in range(plan.count) for e in (k * plan.hop_in, k * plan.hop_in + plan.chunk_in) if 0 < e < frames]
    near = np.zeros(frames, bool)
    for e in edges:
        near[max(0, e - 15):e + 16] = True        # where a chunk's own output lacks context
    assert near.any() and (~near).any()
    np.testing.assert_allclose(y[:, ~near], whole[:, ~near], rtol=0, atol=1e-6)
    err = np.abs(y - whole)[:, near].max()
    if overlap:
        # The crossfade gives a chunk's context-starved edge almost no weight.
        assert err < 1e-2
    else:
        assert err > 1e-2     # plain concatenation: the seams do show (so the check above means something)


@pytest.mark.parametrize("rate_in,rate_out", [(8000, 8000), (44100, 48000)])
def test_crossfade_is_a_raised_cosine_over_the_overlap(rate_in, rate_out):
    """Each chunk's output is a constant (its start frame): in each overlap the result
    must go from one to the next along a raised cosine; elsewhere it is the chunk's own."""
    def start_of_item(b):
        return np.repeat(b[:, :1], b.shape[1] * rate_out // rate_in, axis=1)

    frames = rate_in // 2 + 5
    x = np.arange(frames, dtype=np.float32)[None]
    y = overlap_add(x, start_of_item, rate_in=rate_in, rate_out=rate_out, chunk_seconds=0.05, overlap_seconds=0.01)[0]
    p = plan_chunks(frames, rate_in=rate_in, rate_out=rate_out, chunk_seconds=0.05, overlap_seconds=0.01)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(p.overlap_out) + 0.5) / p.overlap_out)
    for k in range(p.count):
        s, own = k * p.hop_out, k * p.hop_in
        if k:
            prev = own - p.hop_in
            np.testing.assert_allclose((y[s:s + p.overlap_out] - prev) / (own - prev), ramp, rtol=0, atol=1e-5)
        body = y[s + (p.overlap_out if k else 0):min(s + p.chunk_out - p.overlap_out, len(y))]
        assert len(body) and np.all(body == own)


def test_memory_holds_the_output_and_one_batch():
    x = noise(2, 8000 * 60)
    tracemalloc.start()
    try:
        y = overlap_add(x, identity, rate_in=8000, rate_out=8000, chunk_seconds=0.5, overlap_seconds=0.05)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(y, x)
    chunk_bytes = 2 * 4000 * 4
    assert peak < y.nbytes + 20 * chunk_bytes   # a list of all chunk outputs would double it


# --- the model's own rounding -----------------------------------------------------------------


@pytest.mark.parametrize("extra", [2, -3])
def test_output_a_few_samples_off_is_fixed_and_logged(extra):
    rate_in, rate_out = 44100, 48000
    good = interpolator(rate_in, rate_out)

    def sloppy(b):
        y = good(b)
        return np.concatenate([y, np.full((len(b), extra), 9.0, np.float32)], axis=1) if extra > 0 else y[:, :extra]

    x = smooth_signal(rate_in // 2 + 11, rate_in)
    lines = []
    kw = dict(rate_in=rate_in, rate_out=rate_out, chunk_seconds=0.1, overlap_seconds=0.01)
    y = overlap_add(x, sloppy, log=lines.append, **kw)
    ref = overlap_add(x, good, **kw)
    assert y.shape == ref.shape == (2, expected_frames(x.shape[1], rate_in, rate_out))
    assert len(lines) == 1 and ("cropped" if extra > 0 else "zero-padded") in lines[0]
    if extra > 0:
        assert np.array_equal(y, ref)
    else:   # only the last 3 frames of each chunk, at the faded-out end of its overlap, differ
        assert 0 < np.abs(y - ref).max() < 0.05


def test_output_far_off_is_an_error():
    with pytest.raises(ValueError, match="wrong rate"):
        overlap_add(noise(1, 4410), identity, rate_in=44100, rate_out=48000, chunk_seconds=0.05, overlap_seconds=0.01)


def test_progress_after_each_call_and_a_short_last_batch_changes_nothing():
    seen, lines, stats = [], [], {}
    m = Recorder(identity)
    overlap_add(noise(2, 1000), m, rate_in=1000, rate_out=1000, chunk_seconds=0.1, overlap_seconds=0.01,
                batch_items=4, progress=seen.append, log=lines.append, stats=stats)
    assert [s[0] for s in m.shapes] == [4, 4, 4, 4, 4, 2]      # 11 chunks, 22 items
    assert seen == [4 / 22, 8 / 22, 12 / 22, 16 / 22, 20 / 22, 1.0]
    assert lines == [] and stats == {"calls": 6, "oom_retries": 0, "fallback_items": 0, "chunks": 11, "batch_items": 4}


# --- out of memory ----------------------------------------------------------------------------

OOM_KW = dict(rate_in=8000, rate_out=8000, chunk_seconds=0.2, overlap_seconds=0.05)


@pytest.mark.parametrize("model", [identity, fir])
def test_oom_on_big_batches_halves_them_and_keeps_the_size_that_worked(model):
    x = smooth_signal(5000, 8000)                  # 4 chunks of 1600 frames, hop 1200: 8 items
    ref = overlap_add(x, model, batch_items=6, **OOM_KW)
    m, (oom, freed), lines, stats = Recorder(model, fail_over=2), policy(), [], {}
    y = overlap_add(x, m, batch_items=6, oom=oom, log=lines.append, stats=stats, **OOM_KW)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)
    # 6 fails -> 3 fails -> 2 + 1; 3 fails -> 2 + 1; then the last 2 items at the size that worked.
    assert [s[0] for s in m.shapes] == [6, 3, 2, 1, 3, 2, 1, 2]
    assert stats == {"calls": 8, "oom_retries": 3, "fallback_items": 0, "chunks": 4, "batch_items": 2}
    assert len(freed) == 3
    assert lines == ["out of memory on 6 items: retrying 3 at a time",
                     "out of memory on 3 items: retrying 2 at a time",
                     "out of memory on 3 items: retrying 2 at a time",
                     "out of memory: 2 items per call from here on"]


def test_oom_on_chosen_calls_with_fallback_for_a_single_item():
    x = smooth_signal(8000, 8000)                  # 7 chunks: 14 items
    ref = overlap_add(x, fir, **OOM_KW)
    fallback = Recorder(fir)
    m, (oom, freed), lines, stats = Recorder(fir, fail_calls={2, 5}), policy(fallback), [], {}
    y = overlap_add(x, m, oom=oom, log=lines.append, stats=stats, **OOM_KW)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)
    # call 1: chunk 1; call 2 (chunk 2) fails -> calls 3, 4 one item each; from then on one at a
    # time, and call 5 (a single item) fails -> the fallback; then 9 more items.
    assert [s[0] for s in m.shapes] == [2, 2, 1, 1, 1] + [1] * 9
    assert fallback.shapes == [(1, 1600)]
    assert stats["calls"] == 14 and stats["oom_retries"] == 2 and stats["fallback_items"] == 1
    assert len(freed) == 2
    assert lines == ["out of memory on 2 items: retrying 1 at a time",
                     "out of memory: 1 item per call from here on",
                     "out of memory on a single item (chunk 3 of 7, channel 1): ran it on the fallback (CPU)"]


def poisoned(x, chunk, channel):
    """The exact item the chunker will cut for that chunk and channel."""
    plan = plan_chunks(x.shape[1], **OOM_KW)
    item = np.zeros(plan.chunk_in, np.float32)
    seg = x[channel, chunk * plan.hop_in:chunk * plan.hop_in + plan.chunk_in]
    item[:len(seg)] = seg
    return item


@pytest.mark.parametrize("model", [identity, fir])
def test_an_item_that_never_fits_runs_on_the_fallback_and_the_rest_on_the_model(model):
    x = smooth_signal(8000, 8000)
    ref = overlap_add(x, model, **OOM_KW)
    fallback = Recorder(model)
    m = Recorder(model, poison=poisoned(x, 2, 1))
    (oom, freed), lines, stats = policy(fallback), [], {}
    y = overlap_add(x, m, batch_items=4, oom=oom, log=lines.append, stats=stats, **OOM_KW)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)
    # [c1 c2] ok; [c3 c4] fails -> [c3] fails -> [c3L] ok, [c3R] fallback; [c4] ok; then 2 at a time.
    assert [s[0] for s in m.shapes] == [4, 4, 2, 1, 1, 2, 2, 2, 2]
    assert len(fallback.shapes) == 1 and np.array_equal(fallback.shapes[0], (1, 1600))
    assert stats["fallback_items"] == 1 and stats["oom_retries"] == 3 and stats["batch_items"] == 2
    assert len(freed) == 3                     # memory freed before each retry and before the fallback
    assert any("ran it on the fallback" in line for line in lines)


def test_no_fallback_reraises_the_out_of_memory_error():
    x = smooth_signal(8000, 8000)
    m, (oom, _), lines = Recorder(fir, poison=poisoned(x, 4, 0)), policy(None), []
    with pytest.raises(OutOfMemory, match="never fits"):
        overlap_add(x, m, oom=oom, log=lines.append, **OOM_KW)
    assert lines[-1] == "out of memory on a single item (chunk 5 of 7, channel 1) and no fallback: giving up"


def test_without_a_policy_out_of_memory_propagates():
    with pytest.raises(OutOfMemory):
        overlap_add(smooth_signal(8000, 8000), Recorder(fir, fail_calls={3}), **OOM_KW)


def test_other_errors_propagate_untouched():
    boom = KeyError("not memory")
    calls, asked = [], []

    def model(b):
        calls.append(len(b))
        if len(calls) == 2:
            raise boom
        return b.copy()

    oom = OomPolicy(is_oom=lambda e: asked.append(e) or isinstance(e, OutOfMemory), free=lambda: calls.append("free"),
                    fallback=identity)
    with pytest.raises(KeyError) as info:
        overlap_add(smooth_signal(8000, 8000), model, oom=oom, **OOM_KW)
    assert info.value is boom and asked == [boom]
    assert calls == [2, 2]                    # no retry, nothing freed


# --- chunk size from memory -------------------------------------------------------------------

GB = 10 ** 9
COST = ModelCost(fixed_bytes=2 * GB, bytes_per_item_second=0.1 * GB)   # 1 GB per item of 10 s


@pytest.mark.parametrize("free,expected", [
    (100 * GB, (10.0, 16)),   # 78 items fit: capped at max_items
    (10 * GB, (10.0, 6)),     # 8 - 2 = 6 GB: six items
    (5 * GB, (10.0, 2)),      # 4 - 2 = 2 GB: both channels of a chunk
    (4 * GB, (10.0, 1)),      # 3.2 - 2 = 1.2 GB: one channel at a time
    (3 * GB, (4.0, 1)),       # 2.4 - 2 = 0.4 GB: a 4 s chunk
    (2.6 * GB, (1.0, 1)),     # 0.08 GB would be 0.8 s: the floor
    (1 * GB, (1.0, 1)),       # not even the weights fit: the floor, and the OOM policy takes over
])
def test_choose_chunking(free, expected):
    seconds, items = choose_chunking(int(free), COST, channels=2, preferred_seconds=10.0)
    assert (pytest.approx(seconds), items) == expected


def test_context_makes_a_model_with_a_receptive_field_equal_its_whole_pass():
    """A moving average over +-R frames (zeros beyond each item, as a model pads) sees real
    signal at every chunk edge when the context is at least R: chunked equals the whole
    pass (with the same context of zeros around the song) to float rounding, and each item
    is the chunk plus the context either side. Without context the edges differ."""
    reach = 300

    def smear(items):
        kernel = np.ones(2 * reach + 1) / (2 * reach + 1)
        return np.stack([np.convolve(i, kernel, mode="same") for i in items]).astype(np.float32)

    seen = []

    def model(items):
        seen.append(items.shape[1])
        return smear(items)

    x = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32)
    whole = overlap_add(x, smear, rate_in=44100, rate_out=44100, chunk_seconds=2.0, overlap_seconds=0.0,
                        context_seconds=0.01)
    chunked = overlap_add(x, model, rate_in=44100, rate_out=44100, chunk_seconds=0.2, overlap_seconds=0.05,
                          context_seconds=0.01)
    assert set(seen) == {8820 + 2 * 441}
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    bare = overlap_add(x, smear, rate_in=44100, rate_out=44100, chunk_seconds=0.2, overlap_seconds=0.05)
    assert np.max(np.abs(bare - whole)) > 1e-3
