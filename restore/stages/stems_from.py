"""Stems from files (`--stems-from DIR`): stems made elsewhere (Ultimate Vocal Remover,
audio-separator, another model, an earlier 04_stems) instead of running Demucs. Takes the
place of `separate` in 04-07 (engine/plan.py), the song's decode in, {stem: Audio} out,
like Demucs: at the decode's rate, channel count and exact length.

Where the stems of `Artist/Album/Song.mp3` are looked for, first match wins:
1. the layout 04_stems writes: `DIR/Artist/Album/Song/<stem>.flac` (any names: vocals.flac);
2. the names UVR and audio-separator give, beside where that folder would be
   (`DIR/Artist/Album/`) and then in DIR itself: `Song_(Vocals).flac`,
   `Song_(Instrumental).wav`, `Song_(Drums)_htdemucs.flac` (audio-separator adds the
   model), `1_Song_(Vocals).wav` (UVR numbers its inputs). The name in brackets is the
   stem, in lower case with spaces as underscores (`(No Vocals)` -> `no_vocals`).
FLAC and WAV are read (soundfile). Two files for one stem (two models' outputs side by
side) are an error: keep one set per song.

The files are checked against the decode, and a mismatch is a one-line error for that song
(the batch goes on): every stem at the decode's rate (a stem at another rate was made from
another file); the decode's channel count (stereo stems of a mono song are folded to mono:
the tools write stereo whatever they get); lined up with the decode, by cross-correlating
the stems' sum with it within +-100 ms (a decoder that ignored the MP3's gapless tag puts
the encoder's delay, 25 ms for LAME, in front), then the same length within 50 ms (such a
decoder also keeps the end padding, up to about 40 ms at 44.1 kHz), cut or padded with
silence to the exact length; and their sum must be the song: the residual (sum minus
decode) at most -10 dB re the decode, or the stems belong to another song or one is missing.

The plan puts each song's files (names, sizes, modification times) in the marker's versions
(`stems_from.files`): replacing a stem file redoes the song; the folder is in the config.
"""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path, PurePosixPath

import numpy as np

from restore.analysis.blocks import energy
from restore.analysis.compare import align
from restore.audio import Audio, Stems, fit_frames
from restore.errors import InputError, RestoreError
from restore.io.writers import TMP_MARK
from restore.stages.base import Stage, StageContext
from restore.stages.options import Option

SUFFIXES = (".flac", ".wav")
MAX_LAG_S = 0.1            # the delay a decoder without gapless handling adds, with room
MAX_LENGTH_DIFF_S = 0.05   # after alignment: the end padding such a decoder keeps, with room
MAX_RESIDUAL_DB = -10.0    # the stems' sum must be the song: -10 dB is far above any separator's residual
DEMUCS_STEMS = ("drums", "bass", "other", "vocals")


def stem_key(name: str) -> str:
    """'No Vocals' -> 'no_vocals'."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _audio_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()
                      and not p.name.startswith(".") and TMP_MARK not in p.name)
    except OSError:
        return []


def find_stems(folder: Path, song: PurePosixPath | str) -> tuple[dict[str, list[Path]], str]:
    """({stem: [files]}, where they were found) for the song at `song` (its path relative to
    its input folder, "Artist/Album/Song.mp3"); ({}, "") when there are none. More than one
    file for a stem is left to the caller to refuse."""
    rel = PurePosixPath(song).with_suffix("")
    found: dict[str, list[Path]] = {}
    own = folder.joinpath(*rel.parts)
    if own.is_dir():
        for p in _audio_files(own):
            found.setdefault(stem_key(p.stem), []).append(p)
        if found:
            return found, f"{rel.as_posix()}/<stem>"
    named = re.compile(rf"^(?:\d+_)?{re.escape(rel.name)}_\((?P<stem>[^()]+)\)(?:_[^()]*)?$", re.IGNORECASE)
    for where in dict.fromkeys((folder.joinpath(*rel.parent.parts), folder)):
        for p in _audio_files(where):
            m = named.match(p.stem)
            if m:
                found.setdefault(stem_key(m["stem"]), []).append(p)
        if found:
            shown = (where.relative_to(folder) / f"{rel.name}_(<Stem>)").as_posix()
            return found, shown
    return {}, ""


def _read(path: Path) -> Audio:
    import soundfile as sf
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # a damaged or foreign file: say which
        raise InputError(f"cannot read the stem {path.name}: {exc}") from exc
    return Audio.from_frames_major(data, rate)


class StemsFromStage(Stage):
    """Stems read from a folder, checked and lined up with the decode (in place of Demucs)."""

    name = "stems_from"
    revision = 1
    libraries = ("soundfile", "soxr", "numpy")   # soundfile (libsndfile) reads the stems; soxr: align
    options = (Option("folder", "text", "", "the folder of stems made elsewhere: `--stems-from DIR` sets it and uses "
                      "it instead of Demucs in 04-07", values="a folder"),)

    def __init__(self, env=None):
        super().__init__(env)
        self.folder = Path(self.opts["folder"]).expanduser().resolve() if self.opts["folder"] else None

    def unavailable(self) -> str | None:
        if self.folder is None:
            return "no stems folder given (--stems-from DIR)"
        if not self.folder.is_dir():
            return f"the stems folder {self.folder} does not exist"
        return None

    def config(self) -> dict:
        return {"folder": self.folder.as_posix() if self.folder else None, "max_lag_s": MAX_LAG_S,
                "max_length_diff_s": MAX_LENGTH_DIFF_S, "max_residual_db": MAX_RESIDUAL_DB}

    def song_versions(self, song: PurePosixPath | str) -> dict:
        """The song's stem files as the plan sees them (names, sizes, modification times,
        hashed): another file, or the same one rewritten, redoes the song."""
        if self.folder is None:
            return {"files": "none"}
        found, _ = find_stems(self.folder, song)
        h = hashlib.sha256()
        for p in sorted(p for files in found.values() for p in files):
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(self.folder).as_posix()}:{st.st_size}:{st.st_mtime_ns};".encode())
        return {"files": h.hexdigest()[:16] if found else "none"}

    def process(self, audio: Audio, ctx: StageContext) -> Stems:
        """The decode [C, T] -> {stem: [C, T] at its rate}, in the order found (by name)."""
        if self.folder is None:
            raise RestoreError("stems_from has no folder (--stems-from DIR)")
        song = ctx.options.get("song")
        if not song:
            raise RestoreError("stems_from needs the song's path (StageContext.options['song'])")
        found, where = find_stems(self.folder, song)
        stem_name = PurePosixPath(song).with_suffix("").name
        if not found:
            raise InputError(f"no stems for this song in {self.folder} (looked for "
                             f"{PurePosixPath(song).with_suffix('').as_posix()}/<stem>.flac and {stem_name}_(<Stem>).flac)")
        doubled = {k: v for k, v in found.items() if len(v) > 1}
        if doubled:
            k, files = next(iter(doubled.items()))
            raise InputError(f"two files for the stem {k} in {self.folder}: {', '.join(p.name for p in files)} "
                             "(keep one separation per song)")
        stems = {}
        for key, (path,) in found.items():
            stem = _read(path)
            if stem.rate != audio.rate:
                raise InputError(f"the stem {path.name} is at {stem.rate} Hz, the song at {audio.rate} Hz: "
                                 "separate this MP3 (or its decode), not a resampled copy")
            if stem.channels != audio.channels:
                if audio.channels == 1 and stem.channels == 2:
                    stem = Audio(stem.samples.mean(axis=0, keepdims=True), stem.rate)
                else:
                    raise InputError(f"the stem {path.name} has {stem.channels} channel(s), the song {audio.channels}")
            stems[key] = stem
        n = max(s.frames for s in stems.values())
        total = np.zeros((audio.channels, n), np.float32)
        for s in stems.values():
            total[:, :s.frames] += s.samples
        lag, gain = align(Audio(total, audio.rate), audio, max_lag_s=MAX_LAG_S)
        del total
        if gain is None:
            raise InputError(f"the stems in {self.folder} ({where}) share no signal with this song")
        diff = (n - lag) - audio.frames
        if abs(diff) > MAX_LENGTH_DIFF_S * audio.rate:
            raise InputError(f"the stems ({where}) are {abs(diff) / audio.rate:.3f} s "
                             f"{'longer' if diff > 0 else 'shorter'} than the song after lining them up "
                             f"(at most {MAX_LENGTH_DIFF_S * 1000:.0f} ms): stems of another file?")
        out = Stems()
        for key in list(stems):  # one stem's file copy at a time beside the lined-up ones
            x = stems.pop(key).samples
            x = x[:, lag:] if lag >= 0 else np.pad(x, ((0, 0), (-lag, 0)))
            out[key] = Audio(np.ascontiguousarray(fit_frames(x, audio.frames), dtype=np.float32), audio.rate)
            del x
        residual_db = _residual_db(audio, out)
        if residual_db is not None and residual_db > MAX_RESIDUAL_DB:
            missing = [s for s in DEMUCS_STEMS if s not in out] if set(out) < set(DEMUCS_STEMS) else []
            raise InputError(f"the stems ({where}) do not add up to this song: their sum differs from it by "
                             f"{residual_db:.1f} dB (at most {MAX_RESIDUAL_DB:g})"
                             + (f"; missing: {', '.join(missing)}" if missing else "; a stem missing, or another song's?"))
        ctx.facts["stems"] = list(out)
        ctx.facts["stems_from"] = (self.folder / where).as_posix()
        ctx.facts["stems_lag_ms"] = round(1000 * lag / audio.rate, 2)
        ctx.facts["stems_length_diff_ms"] = round(1000 * diff / audio.rate, 2)
        ctx.facts["stems_residual_db"] = residual_db
        ctx.log(f"stems_from: {len(out)} stems ({', '.join(out)}) from {self.folder / where}; "
                f"lined up by {lag:+d} frames, length {diff:+d} frames against the decode; "
                f"sum of stems vs the decode: residual "
                f"{'silent input' if residual_db is None else f'{residual_db:.1f} dB'}")
        ctx.progress(1.0)
        return out


def _residual_db(mix: Audio, stems: dict[str, Audio]) -> float | None:
    """10*log10(power of (sum of stems - mix) / power of mix); None for a silent mix."""
    p = energy(mix)
    if p == 0:
        return None
    diff = mix.samples.copy()
    for s in stems.values():
        diff -= s.samples
    return round(10 * math.log10(max(energy(Audio(diff, mix.rate)), 1e-30) / p), 2)
