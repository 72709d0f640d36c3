"""The offline CPU restore (variant 11_offline_restore): numpy signal processing, nothing to
download, any rate in, the same rate out, exact length, true stereo, deterministic.

What it does (see restore/stages/offline_restore/highs.py for how): fills the spectral holes the encoder
punched in the top of the kept band, and extends the band above the MP3's lowpass from the
music just below it, only as bright as that music is. The whole song's spectrum is read
once (the slope under the cutoff, the level band's frame flatness and the quieter band it
asks for tonal music, the level model's features and gain, recorded in the facts, and the
cutoff itself when the caller gave none); then
the song goes through the one chunker in 10 s blocks with 0.5 s crossfades, both channels
of a block together. Memory: one output copy of the song plus a few blocks' STFTs.

ctx.options: "cutoff_hz" (the decode's measured cutoff, None when none was found) and,
optionally, "bitrate_kbps" (the MP3's): a cliff well under where LAME cuts at that bitrate is
the music's own band limit and is not extended (without it, every cliff counts as the
encoder's).

Options (`--set offline_restore.KEY=VALUE`), all in config():
  strength   0..4, default 1: scales the extension's amplitude (0: no extension)
  rolloff    dB per kHz, default 0.5: how much faster than the music's own slope the added
             highs fall with frequency
  holes      on/off, default on: fill the encoder's spectral holes
  level      plain (default) or model: the added band's level from the plain rule or from the
             level model (highs.level_gain_db)
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from restore.audio import Audio
from restore.models.chunking import overlap_add, plan_chunks
from restore.analysis.spectrum import average_spectrum_db, cutoff_from_spectrum
from restore.analysis.stft import OFFLINE
from restore.stages.offline_restore.highs import (HighsSettings, SongPlan, frame_features, level_features, level_gain_db,
                                                  measure_slope, near_slope, restore_block, sfb21_hz, tonal_fade_db,
                                                  SPARSE_BAND_HZ)
from restore.stages.base import Stage, StageContext
from restore.stages.options import Option

CHUNK_SECONDS = 10.0           # about: rounded to whole STFT hops (see _geometry)
OVERLAP_SECONDS = 0.5          # >> the STFT's 23 ms window: block edges are crossfaded away
MIN_CUTOFF_HZ = 6000.0         # below this the "music just below the cutoff" is no guide to the highs
TOP_MARGIN_HZ = 300.0          # a cutoff this close to Nyquist leaves nothing to extend
# LAME 3.100's lowpass for stereo CBR (lame.c, optimum_bandwidth): kbps -> Hz
LAME_LOWPASS_HZ = ((8, 2000), (16, 3700), (24, 3900), (32, 5500), (40, 7000), (48, 7500), (56, 10000), (64, 11000),
                   (80, 13500), (96, 15100), (112, 15600), (128, 17000), (160, 17500), (192, 18600), (224, 19400),
                   (256, 19700), (320, 20500))
OWN_LIMIT_MARGIN_HZ = 400.0    # a cliff this far under where the encoder would cut is the music's own


def lame_lowpass_hz(kbps: float) -> float:
    """LAME's lowpass for this bitrate (interpolated between the table's bitrates)."""
    kb, hz = zip(*LAME_LOWPASS_HZ)
    return float(np.interp(kbps, kb, hz))


def encoder_cut_hz(kbps: float, rate: int) -> float:
    """Where LAME would cut at this bitrate: its lowpass or sfb21's start, whichever is lower
    (at 128 kbps LAME may drop sfb21 whole)."""
    return min(lame_lowpass_hz(kbps), sfb21_hz(rate))


def _geometry(rate: int) -> tuple[float, float]:
    """(chunk, overlap) in seconds, both whole numbers of STFT hops at `rate`: every block then
    starts on the whole song's frame grid, so a block computes the same frames (and the same
    upward copy, whose phase depends on the frame start) as its neighbour in their overlap,
    and the crossfade joins two copies of one signal instead of two differently phased ones."""
    chunk, overlap = round(CHUNK_SECONDS * rate / OFFLINE.hop), round(OVERLAP_SECONDS * rate / OFFLINE.hop)
    return chunk * OFFLINE.hop / rate, overlap * OFFLINE.hop / rate


class OfflineRestoreStage(Stage):
    """The restore that needs no download (11_offline_restore): numpy only, runs anywhere."""

    name = "offline_restore"
    libraries = ("numpy",)
    revision = 7   # bump when the output for the same input and options would change
    options = (
        Option("strength", "float", 1.0, "scales the added highs' amplitude (0 adds none)", 0.0, 4.0),
        Option("rolloff", "float", 0.5, "dB per kHz by which the added highs fall faster than the music's own slope above the cutoff", -6.0, 30.0),
        Option("holes", "bool", True, "fill the holes the encoder punched below the cutoff"),
        Option("level", "choice", "plain", "the added band's level: plain (the music's slope continued) or model "
               "(a line in four features of the decode, fitted on random mixes; a hypothesis to A/B)",
               choices=("plain", "model")),
    )

    def __init__(self, env=None):
        super().__init__(env)
        self.strength = self.opts["strength"]
        self.settings = HighsSettings(
            strength_db=20 * math.log10(self.strength) if self.strength > 0 else -math.inf,
            rolloff_db_khz=self.opts["rolloff"],
            holes=self.opts["holes"],
            fitted_level=self.opts["level"] == "model",
        )

    def config(self) -> dict:
        return {"strength": self.strength, **self.settings.config(),
                "chunk_s": CHUNK_SECONDS, "overlap_s": OVERLAP_SECONDS}

    def memory_bytes(self) -> int:
        # Working memory besides the song and its output copy: a few 10 s blocks' STFTs (the
        # hour-long bench peaked 350 MiB over two song copies, FLAC writer included).
        return 384 << 20

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, T] at the same rate."""
        spectrum = average_spectrum_db(audio)
        # The decode's reading of the encoder's lowpass; measured the same way when called
        # outside the pipeline.
        cutoff = ctx.options["cutoff_hz"] if "cutoff_hz" in ctx.options else cutoff_from_spectrum(spectrum, audio.rate)
        facts = {"cutoff_hz": cutoff, "extended": False}
        ctx.facts["offline_restore"] = facts
        if spectrum is None:
            ctx.log("offline_restore: the song is silent; output = input")
            ctx.progress(1.0)
            return Audio(audio.samples.copy(), audio.rate)
        measured = cutoff is not None
        if cutoff is None:
            # No clean cliff (quiet and mid-level songs of the dev set): LAME at 128-256 kbps still
            # keeps only scattered bits of sfb21. What is missing there is filled, nothing more.
            cutoff = sfb21_hz(audio.rate)
        settings = self.settings
        kbps = ctx.options.get("bitrate_kbps")
        if measured and kbps and cutoff < encoder_cut_hz(float(kbps), audio.rate) - OWN_LIMIT_MARGIN_HZ:
            # At this bitrate the encoder keeps more than this: the cliff is the music's own (a
            # voice recorded at 22 kHz, samples made at 32 kHz). Nothing is missing above it.
            ctx.log(f"offline_restore: the cliff at {cutoff:.0f} Hz is under where a {kbps} kbps MP3 is cut "
                    f"({encoder_cut_hz(float(kbps), audio.rate):.0f} Hz): the music's own band limit, not extended")
            facts["own_band_limit"] = True
            settings = dataclasses.replace(settings, strength_db=-math.inf)
        fill_hz = float(cutoff)
        if cutoff < MIN_CUTOFF_HZ or fill_hz > audio.rate / 2 - TOP_MARGIN_HZ:
            ctx.log(f"offline_restore: nothing to do (cutoff {cutoff:.0f} Hz is outside {MIN_CUTOFF_HZ:.0f} Hz "
                    f".. Nyquist - {TOP_MARGIN_HZ:.0f} Hz); output = input")
            ctx.progress(1.0)
            return Audio(audio.samples.copy(), audio.rate)
        level_top = min(fill_hz, sfb21_hz(audio.rate))
        sparse_top = lame_lowpass_hz(float(kbps)) if kbps and not measured else None
        if sparse_top is not None and sparse_top < cutoff + SPARSE_BAND_HZ:
            sparse_top = None
        plan = SongPlan(audio.rate, float(cutoff), measure_slope(spectrum, audio.rate, level_top, settings), sparse_top)
        near = near_slope(spectrum, audio.rate, level_top)
        features = level_features(spectrum, audio.rate, float(cutoff))
        frame = frame_features(audio.samples, audio.rate, float(cutoff))      # at most 2000 frames: cheap
        if features is not None and settings.fitted_level:
            features.update(frame or {})
        extending = math.isfinite(settings.strength_db)
        gain_db = level_gain_db(features) if settings.fitted_level and extending else 0.0
        tonal_db = tonal_fade_db(frame, settings) if extending else 0.0
        if gain_db or tonal_db:
            settings = dataclasses.replace(settings, strength_db=settings.strength_db + gain_db + tonal_db)
        facts.update(near_slope_db_khz=None if near is None else round(near, 2), level_gain_db=round(gain_db, 2),
                     tonal_fade_db=round(tonal_db, 2), flat_f_db=None if frame is None else round(frame["flat_f"], 2),
                     level_features=None if features is None else {k: round(v, 3) for k, v in features.items()})
        totals = {"frames": 0, "holes": 0, "extended_frames": 0, "kept_floor_frames": 0}
        calls = [0]
        chunk_s, overlap_s = _geometry(audio.rate)
        hop = plan_chunks(audio.frames, rate_in=audio.rate, rate_out=audio.rate, chunk_seconds=chunk_s,
                          overlap_seconds=overlap_s).hop_in   # a multiple of HOP

        def block(items: np.ndarray) -> np.ndarray:
            # The chunker hands all channels of one chunk together (batch_items = channels),
            # in order: the call count is the chunk's index, and chunk k starts at k * hop.
            y, f = restore_block(items, plan, settings, calls[0] * hop)
            calls[0] += 1
            for key in totals:
                totals[key] += f[key]
            return y

        y = overlap_add(audio.samples, block, rate_in=audio.rate, rate_out=audio.rate, chunk_seconds=chunk_s,
                        overlap_seconds=overlap_s, batch_items=audio.channels, log=ctx.log, progress=ctx.progress)
        frames = max(totals["frames"], 1)
        facts.update(extended=bool(math.isfinite(settings.strength_db)), from_hz=round(fill_hz, 1), slope_db_khz=round(plan.slope_db_khz, 2),
                     extended_frames_pct=round(100 * totals["extended_frames"] / frames, 1), holes_filled=totals["holes"],
                     kept_floor_frames_pct=round(100 * totals["kept_floor_frames"] / frames, 1),
                     sparse_fill_below_hz=sparse_top)
        ctx.log(f"offline_restore: filled from {fill_hz:.0f} Hz up (cutoff {cutoff:.0f} Hz, the music's slope "
                f"{plan.slope_db_khz:+.1f} dB/kHz{f', level {gain_db:+.1f} dB from the level model' if gain_db else ''}"
                f"{f', {tonal_db:+.1f} dB for tonal music' if tonal_db else ''}, "
                f"{facts['extended_frames_pct']}% of frames loud enough, {facts['kept_floor_frames_pct']}% raised to "
                f"the band kept under the cutoff"
                f"{f'; {-settings.sparse_fill_db:.0f} dB less in the emptied bins under {sparse_top:.0f} Hz' if sparse_top else ''}), "
                f"{totals['holes']} hole bins filled below")
        return Audio(y, audio.rate)
