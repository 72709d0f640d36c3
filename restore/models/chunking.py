"""The one chunker every neural stage uses: overlap-add with a raised-cosine crossfade.

A stage hands `overlap_add` the whole song (float32 [channels, frames] at rate_in) and a
model function on numpy arrays (float32 [items, n_in] -> [items, n_out] at rate_out; an
item is one chunk of one channel). It gets back float32 [channels, frames_out] at rate_out
with frames_out = round(frames * rate_out / rate_in), exactly. No torch here: the stage's
model function moves arrays to and from its device, and an `OomPolicy` says how to tell
and recover from its out-of-memory errors.

Chunk lengths and overlaps are whole multiples of the rate quantum q_in = rate_in //
gcd(rate_in, rate_out), so that every chunk start and length is a whole number of samples
at both rates (44.1 -> 48 kHz: 147 in, 160 out) and every seam sits at the same instant in
the input and the output.

A model whose output near its input's edges differs from what it gives with the music
around (any model with a receptive field: Apollo's reaches about 0.55 s either side) asks
for `context_seconds`: each item then carries that much of the real signal before and after
its chunk (zeros beyond the song), and only the middle of the model's output is kept.
With context at least the receptive field (and chunk starts on the model's frame grid)
the chunks equal one pass over the whole song, and the crossfade only hides rounding.
"""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from restore.audio import frames_at_rate

Model = Callable[[np.ndarray], np.ndarray]


def _ignore(_) -> None:
    pass


@dataclass
class OomPolicy:
    """How to recover when the model runs out of memory (CUDA OOM in practice).

    is_oom:   tells an out-of-memory error from any other (e.g. isinstance(e, torch.cuda.OutOfMemoryError));
              other errors propagate untouched.
    free:     releases cached memory before the retry (e.g. torch.cuda.empty_cache).
    fallback: the same model somewhere with more memory (the CPU), same contract as the model;
              used for a single item that still does not fit. None: re-raise instead.
    """

    is_oom: Callable[[BaseException], bool]
    free: Callable[[], None] = lambda: None
    fallback: Model | None = None


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks lie, in frames at both rates.

    Chunk k covers input [k * hop_in, k * hop_in + chunk_in) (zeros past the end of the
    signal) and output [k * hop_out, k * hop_out + chunk_out); neighbours share overlap_*
    frames. A signal no longer than one chunk is a single chunk of its own length rounded
    up to the quantum (overlap 0). `count` is 0 for an empty signal.
    """

    frames_in: int
    frames_out: int
    chunk_in: int
    overlap_in: int
    chunk_out: int
    overlap_out: int
    count: int
    context_in: int = 0    # frames of real signal before and after each chunk in every item
    context_out: int = 0   # the same at rate_out: cropped from each side of the model's output

    @property
    def item_in(self) -> int:
        """Frames of one item given to the model: the chunk and its context either side."""
        return self.chunk_in + 2 * self.context_in

    @property
    def item_out(self) -> int:
        return self.chunk_out + 2 * self.context_out

    @property
    def hop_in(self) -> int:
        return self.chunk_in - self.overlap_in

    @property
    def hop_out(self) -> int:
        return self.chunk_out - self.overlap_out


def _quanta(seconds: float, rate: int, q: int) -> int:
    # Round to 1e-6 quantum first, so that 0.1 s * 44100 / 147 = 30.000000000000004 is 30, not 31.
    return math.ceil(round(seconds * rate / q, 6))


def plan_chunks(frames: int, *, rate_in: int, rate_out: int, chunk_seconds: float, overlap_seconds: float,
                context_seconds: float = 0.0) -> ChunkPlan:
    """The chunk geometry `overlap_add` uses for a signal of `frames` frames at rate_in (Hz).

    Chunk, overlap and context are rounded up to whole quanta of rate_in // gcd(rate_in, rate_out)
    frames; the chunk is at least one quantum. The overlap may be 0 (plain concatenation)
    and at most half the chunk after rounding, so that a point is never in more than two
    chunks; more raises ValueError.
    """
    if frames < 0 or rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"need frames >= 0 and positive rates, got {frames} frames, {rate_in} Hz -> {rate_out} Hz")
    if not chunk_seconds > 0 or not overlap_seconds >= 0 or not context_seconds >= 0:
        raise ValueError(f"need chunk_seconds > 0 and overlap_seconds, context_seconds >= 0, "
                         f"got {chunk_seconds}, {overlap_seconds}, {context_seconds}")
    g = math.gcd(rate_in, rate_out)
    q_in, q_out = rate_in // g, rate_out // g
    chunk_q = max(1, _quanta(chunk_seconds, rate_in, q_in))
    overlap_q = _quanta(overlap_seconds, rate_in, q_in)
    context_q = _quanta(context_seconds, rate_in, q_in)
    if 2 * overlap_q > chunk_q:
        raise ValueError(
            f"overlap of {overlap_q * q_in} frames is more than half the chunk of {chunk_q * q_in} frames "
            f"(both rounded up to multiples of {q_in} frames at {rate_in} Hz)"
        )
    frames_out = frames_at_rate(frames, rate_in, rate_out)
    if frames <= chunk_q * q_in:
        # One chunk of the signal's own length: a 1 s song is not padded to a 12 s chunk.
        chunk_q, overlap_q = -(-frames // q_in), 0
        count = 1 if frames else 0
    else:
        hop = (chunk_q - overlap_q) * q_in
        count = 1 + -(-(frames - chunk_q * q_in) // hop)
    return ChunkPlan(frames, frames_out, chunk_q * q_in, overlap_q * q_in, chunk_q * q_out, overlap_q * q_out, count,
                     context_q * q_in, context_q * q_out)


class _Assembler:
    """Writes finished chunks into the output in order, crossfading each with the pending
    tail of the one before; holds nothing else."""

    def __init__(self, out: np.ndarray, plan: ChunkPlan):
        self.out, self.plan = out, plan
        n = plan.overlap_out
        # Raised cosine sampled at the middle of each output frame; the fade-out is its mirror.
        self.w_in = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n) if n else np.zeros(0)
        self.w_out = self.w_in[::-1].copy()
        self.pending: np.ndarray | None = None   # [channels, overlap_out] float32: the previous chunk's tail

    def commit(self, k: int, y: np.ndarray) -> None:
        """y: float32 [channels, chunk_out], the model's output for chunk k."""
        p, out = self.plan, self.out
        frames = out.shape[1]
        start, end = k * p.hop_out, k * p.hop_out + p.chunk_out
        lo = start
        if k > 0 and p.overlap_out:
            n = max(0, min(p.overlap_out, frames - start))
            if n:
                wo, wi = self.w_out[:n], self.w_in[:n]
                # float64 and normalised by the weight sum: where both chunks agree the blend is
                # exactly their value, so an identity model reproduces its input bit for bit.
                blend = (self.pending[:, :n].astype(np.float64) * wo + y[:, :n].astype(np.float64) * wi) / (wo + wi)
                out[:, start:start + n] = blend.astype(np.float32)
            lo = start + p.overlap_out
        last = k == p.count - 1
        hi = min(end if last else end - p.overlap_out, frames)
        if hi > lo:
            out[:, lo:hi] = y[:, lo - start:hi - start]
        self.pending = None if last or not p.overlap_out else y[:, p.chunk_out - p.overlap_out:].copy()


class _Runner:
    """Calls the model on one batch, splitting it on out-of-memory errors."""

    def __init__(self, model: Model, oom: OomPolicy | None, plan: ChunkPlan, channels: int, log, counts: dict):
        self.model, self.oom, self.plan, self.channels, self.log, self.counts = model, oom, plan, channels, log, counts
        self.length_logged = False

    def run(self, batch: np.ndarray, first: int) -> tuple[np.ndarray, int]:
        """batch: float32 [n, item_in], items first..first+n-1. Returns the output
        [n, item_out] and the largest number of items that ran in one call of the main
        model (0 if all went to the fallback)."""
        n = len(batch)
        self.counts["calls"] += 1
        try:
            y = self.model(batch)
        except Exception as e:
            if self.oom is None or not self.oom.is_oom(e):
                raise
            err = e
            # The traceback's frames hold the model's (GPU) tensors: clear them, or free()
            # cannot release that memory. Recovery runs outside this block for the same reason.
            traceback.clear_frames(e.__traceback__)
        else:
            return self._fit(y, n), n
        self.counts["oom_retries"] += 1
        self.oom.free()
        if n == 1:
            k, c = divmod(first, self.channels)
            where = f"chunk {k + 1} of {self.plan.count}, channel {c + 1}"
            if self.oom.fallback is None:
                self.log(f"out of memory on a single item ({where}) and no fallback: giving up")
                raise err
            self.log(f"out of memory on a single item ({where}): ran it on the fallback (CPU)")
            self.counts["fallback_items"] += 1
            return self._fit(self.oom.fallback(batch), 1), 0
        half = (n + 1) // 2
        self.log(f"out of memory on {n} items: retrying {half} at a time")
        ya, wa = self.run(batch[:half], first)
        yb, wb = self.run(batch[half:], first + half)
        return np.concatenate([ya, yb]), max(wa, wb)

    def _fit(self, y, n: int) -> np.ndarray:
        """The model's output as float32 [n, item_out]: a few frames too many are cropped,
        too few zero-padded (resamplers round); a length far off is a wrong model, not rounding."""
        want = self.plan.item_out
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 2 or y.shape[0] != n:
            raise ValueError(f"model returned shape {y.shape} for [{n}, {self.plan.item_in}]; expected [{n}, {want}]")
        got = y.shape[1]
        if got == want:
            return y
        if abs(got - want) > max(8, want // 100):
            raise ValueError(f"model returned {got} frames for {self.plan.item_in}; expected {want} (wrong rate?)")
        if not self.length_logged:
            self.length_logged = True
            fix = "cropped" if got > want else "zero-padded"
            self.log(f"model returned {got} frames per item instead of {want}: {fix} to {want}")
        if got > want:
            return y[:, :want]
        return np.pad(y, ((0, 0), (0, want - got)))


def overlap_add(
    x: np.ndarray,
    model: Model,
    *,
    rate_in: int,
    rate_out: int,
    chunk_seconds: float,
    overlap_seconds: float,
    context_seconds: float = 0.0,
    batch_items: int | None = None,
    oom: OomPolicy | None = None,
    log: Callable[[str], None] = _ignore,
    progress: Callable[[float], None] = _ignore,
    stats: dict | None = None,
) -> np.ndarray:
    """Run `model` over x chunk by chunk and crossfade the results.

    x:      float32 [channels, frames] at rate_in (Hz).
    model:  float32 [items, n_in] -> [items, n_out] with n_out = n_in * rate_out / rate_in;
            an item is one chunk of one channel (with its context either side). A few frames more or fewer are cropped or
            zero-padded (logged once).
    chunk_seconds, overlap_seconds: the geometry, rounded up to whole rate quanta (see
            plan_chunks). Every chunk of a song longer than one chunk has the full length (the
            last is zero-padded past the end), so the model always sees the same items however
            they are batched.
    context_seconds: real signal given to the model before and after each chunk (zeros
            beyond the song) and cropped from its output: for models whose output near an
            edge depends on what lies beyond it. 0: none (the default).
    batch_items: items per model call, default the channel count (left and right of one
            chunk together); more lets items of several chunks share a call.
    oom:    out-of-memory recovery: the batch is halved down to single items, a single item
            that still fails goes to oom.fallback, and later calls keep the size that worked.
            The geometry never changes, so the result equals an undisturbed run.
    log:    one plain line per notable event; progress: fraction 0..1 after each call.
    stats:  if given, filled with calls (of the main model, failed ones included),
            oom_retries (out-of-memory errors recovered from or re-raised), fallback_items,
            chunks and batch_items (the size in use at the end).

    Returns float32 [channels, round(frames * rate_out / rate_in)] at rate_out. The output is
    preallocated and chunks are written in order; only the previous chunk's overlap tail is
    kept. In an overlap the earlier chunk fades out and the later fades in (raised cosine),
    normalised by the weight sum; elsewhere each chunk is copied as is.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype != np.float32:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"x must be a float32 [channels, frames] array, got {got}")
    channels, frames = x.shape
    plan = plan_chunks(frames, rate_in=rate_in, rate_out=rate_out,
                       chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                       context_seconds=context_seconds)
    size = channels if batch_items is None else int(batch_items)
    if size < 1:
        raise ValueError(f"batch_items must be at least 1, got {batch_items}")
    counts = {"calls": 0, "oom_retries": 0, "fallback_items": 0}
    out = np.zeros((channels, plan.frames_out), np.float32)
    runner = _Runner(model, oom, plan, channels, log, counts)
    assembler = _Assembler(out, plan)
    chunk = np.zeros((channels, plan.chunk_out), np.float32)   # the chunk being filled, channel by channel
    total = plan.count * channels
    done = 0
    while done < total:
        n = min(size, total - done)
        batch = np.zeros((n, plan.item_in), np.float32)
        for j in range(n):
            k, c = divmod(done + j, channels)
            lo = k * plan.hop_in - plan.context_in          # negative before the song: zeros there
            seg = x[c, max(lo, 0):lo + plan.item_in]
            batch[j, max(-lo, 0):max(-lo, 0) + seg.shape[0]] = seg
        y, worked = runner.run(batch, done)
        if plan.context_out:
            y = y[:, plan.context_out:plan.context_out + plan.chunk_out]
        if worked < n and max(1, worked) < size:   # an out-of-memory error, not just a short last batch
            size = max(1, worked)
            log(f"out of memory: {size} item{'s' if size > 1 else ''} per call from here on")
        for j in range(n):
            k, c = divmod(done + j, channels)
            chunk[c] = y[j]
            if c == channels - 1:
                assembler.commit(k, chunk)
        done += n
        progress(done / total)
    if stats is not None:
        stats.update(counts, chunks=plan.count, batch_items=size)
    return out


@dataclass(frozen=True)
class ModelCost:
    """A model's memory use on its device, in bytes.

    fixed_bytes:           weights and workspace, whatever the input length.
    bytes_per_item_second: activation memory per item (one channel of one chunk) per second
                           of input audio, so one call of B items of s seconds needs about
                           fixed_bytes + B * s * bytes_per_item_second.
    """

    fixed_bytes: int
    bytes_per_item_second: float


def choose_chunking(
    free_bytes: int,
    cost: ModelCost,
    channels: int,
    preferred_seconds: float,
    min_seconds: float = 1.0,
    max_items: int = 16,
    safety: float = 0.8,
) -> tuple[float, int]:
    """(chunk_seconds, batch_items) that fit in `free_bytes` (bytes free on the device).

    The budget is safety * free_bytes - cost.fixed_bytes. The preferred chunk length (seconds)
    is kept if at least one item of it fits, with as many items per call as fit, at most
    max_items (so both channels of a chunk go together whenever two fit). If not, the longest
    chunk that fits with one item (rounded down to 10 ms), not shorter than min_seconds; if not
    even that fits, (min_seconds, 1) and the out-of-memory policy takes over. The caller keeps
    its overlap, which must stay within half the chunk.
    """
    if channels < 1 or max_items < 1 or not preferred_seconds > 0 or not min_seconds > 0:
        raise ValueError("need channels >= 1, max_items >= 1 and positive chunk lengths")
    budget = safety * free_bytes - cost.fixed_bytes
    per_second = cost.bytes_per_item_second
    if per_second <= 0:   # no activations to speak of: only the weights have to fit
        return (preferred_seconds, max_items) if budget >= 0 else (min_seconds, 1)
    fit = int(budget // (per_second * preferred_seconds)) if budget > 0 else 0
    if fit >= 1:
        return preferred_seconds, min(fit, max_items)
    seconds = math.floor(budget / per_second * 100) / 100 if budget > 0 else 0.0
    return max(seconds, min_seconds), 1
