"""The quality harness: how close each variant comes to the lossless source, beside two controls.

    python bench/quality.py [--variants 11,08] [--bitrates 128,192] [--clips drums,piano]
                            [--devset build/devset] [--out build/quality] [--no-visqol]

For every clip of the dev set (scripts/make_devset.py) and bitrate:
1. encode the lossless source with LAME 3.100 (lameenc, CBR, no gapless tag);
2. run 01_baseline and the chosen variants over the MP3s through the library
   (restore.engine.run.run, the code behind `mp3restore run`, report=False);
3. build the noise control: the decode plus white noise at -80 dBFS RMS, band-limited to
   above the cutoff the decode measures (restore.analysis.spectrum.effective_cutoff_hz, as the
   decode stage does; LAME's nominal lowpass for the bitrate when it finds none), seeded:
   a "restoration" that restores nothing;
4. score every output against the source (restore.analysis.compare.reference_metrics: resampled to
   the source's rate, aligned, gain removed): LSD full / below 16 kHz / above 16 kHz / above
   the cutoff, SI-SDR, ViSQOL, per-band energy error, loudness difference;
5. give each variant a verdict against both controls (see VERDICT_RULES).

Caching, so that a second run costs only what changed: the MP3s (kept while the source
and LAME are the same), the decodes and variant outputs (the pipeline's own _done markers),
and the scores (keyed by the SHA-256 of the scored audio and of the measuring code).
Writes OUT/RESULTS-quality.md (a Markdown table ready for bench/RESULTS.md) and
OUT/quality.json (every number).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from restore.analysis import blocks, compare, spectrum  # noqa: E402
from restore.audio import Audio  # noqa: E402
from restore.io.writers import hash_file  # noqa: E402

HARNESS_VERSION = 2          # bump when a score's definition changes: old cached scores are dropped
NOISE_DBFS = -80.0           # the noise control's level: RMS of the added noise, per channel
NOISE_SEED = 20240611
VISQOL_SECONDS = 4.0         # ViSQOL (pure Python, ~3x real time here) looks at the loudest 4 s only
HIGH_HZ = 16000.0
# LAME 3.100's lowpass for CBR bitrates (lame.c, optimum_bandwidth): the noise control's
# edge when the decode shows no measurable cutoff.
LAME_LOWPASS_HZ = {96: 15100, 112: 15600, 128: 17000, 160: 17500, 192: 18600, 224: 19400, 256: 19700, 320: 20500}

# A variant is "better" only where its LSD above 16 kHz is at least HIGH_WIN_DB under BOTH
# controls', the energy above the cutoff is within ENERGY_TOL_DB of the source's, and it loses
# on nothing against the plain decode; a loss is a change past the tolerance below (units: dB
# for LSD and SI-SDR, MOS for ViSQOL, LU for loudness). Full-band SI-SDR is information only:
# any bandwidth extension that is not the source's own waveform lowers it.
HIGH_WIN_DB = 0.5
ENERGY_TOL_DB = 2.0
DARK_TOL_DB = 0.1            # a clip with a dark top: LSD above 16 kHz within this of the decode's
DARK_TOP_DB = -100.0         # the source's mean bin level above 16 kHz under this (0 dB: a full-scale
                             # sine's bin) is a dark top: at the LSD's -100 dB floor, nothing to restore
VERDICT_RULES = {
    # metric: (direction, tolerance); "lower": lower is better
    "lsd_above_16k": ("lower", HIGH_WIN_DB),   # adding junk above 16 kHz is a loss too
    "lsd_below_16k": ("lower", 0.05),
    "kept_si_sdr": ("higher", 0.2),            # the band the MP3 kept stays as decoded
    "lsd_full": ("lower", 0.5),
    "visqol": ("higher", 0.1),
    "abs_loudness_diff_lu": ("lower", 0.5),
}


@dataclass
class Clip:
    name: str
    path: Path
    sha: str


# ---- Audio in and out ---------------------------------------------------------------------

def read_audio(path: Path) -> Audio:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio.from_frames_major(data, rate)


def file_sha(path: Path) -> str:
    return hash_file(path, "sha256")


def audio_sha(audio: Audio) -> str:
    h = hashlib.sha256(str((audio.rate, audio.samples.shape)).encode())
    h.update(np.ascontiguousarray(audio.samples).tobytes())
    return h.hexdigest()


# ---- The noise control ----------------------------------------------------------------------

def control_edge(decode: Audio, kbps: int | None) -> tuple[float, str]:
    """(Hz, how it was found): the cutoff the decode measures (restore.metrics.
    effective_cutoff_hz, as the decode stage does); when it finds none, LAME's nominal
    lowpass for the bitrate; failing that, 16 kHz."""
    cutoff = spectrum.effective_cutoff_hz(decode)
    if cutoff:
        return float(cutoff), "measured"
    if kbps in LAME_LOWPASS_HZ:
        return float(LAME_LOWPASS_HZ[kbps]), "LAME nominal"
    return HIGH_HZ, "fallback"


def noise_control(decode: Audio, edge_hz: float, level_dbfs: float = NOISE_DBFS,
                  seed: int = NOISE_SEED) -> tuple[Audio, float]:
    """(decode + noise, the band's lower edge in Hz). The noise is Gaussian, independent per
    channel, seeded (the same control every run), zero below edge_hz (an FFT brickwall over
    the whole clip: clips are short), flat from there to Nyquist, scaled to an RMS of
    level_dbfs in each channel (see control_edge for the edge)."""
    edge = float(edge_hz)
    rng = np.random.default_rng(seed)
    n = decode.frames
    noise = rng.standard_normal((decode.channels, n))
    spec = np.fft.rfft(noise, axis=1)
    spec[:, np.fft.rfftfreq(n, 1 / decode.rate) < edge] = 0
    noise = np.fft.irfft(spec, n, axis=1)
    rms = np.sqrt(np.mean(np.square(noise), axis=1, keepdims=True))
    noise *= 10 ** (level_dbfs / 20) / np.maximum(rms, 1e-30)
    return Audio((decode.samples + noise).astype(np.float32), decode.rate), edge


# ---- Scores -----------------------------------------------------------------------------------

def loudest_window(reference: Audio, seconds: float) -> tuple[int, int]:
    """(start, end) frames of the `seconds` of the reference with the most energy, on a 0.5 s grid."""
    n = min(reference.frames, int(round(seconds * reference.rate)))
    step = max(1, reference.rate // 2)
    best, start = -1.0, 0
    for s in range(0, max(reference.frames - n, 0) + 1, step):
        e = float(np.square(reference.samples[:, s:s + n], dtype=np.float64).sum())
        if e > best:
            best, start = e, s
    return start, start + n


KEPT_MARGIN_HZ = 300.0       # the kept band ends this far under the measured cutoff (LAME's transition)


def brickwall(audio: Audio, lo_hz: float | None, hi_hz: float | None) -> np.ndarray:
    """float64 [channels, frames]: `audio` with every FFT bin (one FFT over the whole clip:
    clips are short) outside [lo_hz, hi_hz) set to zero."""
    spec = np.fft.rfft(audio.samples.astype(np.float64), axis=1)
    f = np.fft.rfftfreq(audio.frames, 1 / audio.rate)
    spec[:, ((f < lo_hz) if lo_hz else False) | ((f >= hi_hz) if hi_hz else False)] = 0
    return np.fft.irfft(spec, audio.frames, axis=1)


def kept_si_sdr(test: Audio, reference: Audio, cutoff_hz: float) -> float | None:
    """SI-SDR (dB) of the band the MP3 kept: test and reference (aligned, same rate) both
    low-passed KEPT_MARGIN_HZ under the cutoff. A restoration that adds only above the cutoff
    and in the encoder's holes leaves it where the decode has it."""
    top = cutoff_hz - KEPT_MARGIN_HZ
    return compare.si_sdr_db(Audio(brickwall(test, None, top).astype(np.float32), test.rate),
                             Audio(brickwall(reference, None, top).astype(np.float32), reference.rate))


def energy_above_db(test: Audio, reference: Audio, cutoff_hz: float) -> float | None:
    """Energy above the cutoff (to Nyquist) of the aligned test over the reference's, in dB:
    + is brighter than the source. None where the source has nothing there."""
    f = np.fft.rfftfreq(reference.frames, 1 / reference.rate)
    e = [float((np.abs(np.fft.rfft(a.samples.astype(np.float64), axis=1)[:, f >= cutoff_hz]) ** 2).sum())
         for a in (test, reference)]
    if e[1] <= 0:
        return None
    return float(10 * np.log10(max(e[0], e[1] * 1e-20) / e[1]))


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def top_level_db(reference: Audio, lo_hz: float = HIGH_HZ) -> float | None:
    """The source's mean bin level above lo_hz in dB, in the LSD's STFT scale (Hann 2048,
    a full-scale sine's bin reads 0 dB), over frames where anything sounds: under
    DARK_TOP_DB the top is dark (the LSD's -100 dB floor makes any addition a loss)."""
    freqs = np.fft.rfftfreq(compare._STFT_N, 1 / reference.rate)
    m = freqs >= lo_hz
    if not m.any():
        return None
    total, count = 0.0, 0
    for (p,) in compare._stft_power(reference.samples):
        live = p.max(axis=-1) > compare._BIN_FLOOR
        total += float(p[..., m][live].sum())
        count += int(live.sum()) * int(m.sum())
    return float(10 * np.log10(max(total / count, 1e-30))) if count else None


def band_scores(aligned: Audio, reference: Audio, cutoff_hz: float) -> dict:
    """The measures that say what a restoration did where: LSD above and below 16 kHz, the
    kept band's SI-SDR, the energy above the cutoff against the source (see those functions).
    `aligned` is at the reference's rate and lined up with it."""
    lsd, _ = compare._compare(aligned, reference, [(HIGH_HZ, None), (None, HIGH_HZ)])
    return {"lsd_above_16k": lsd[0], "lsd_below_16k": lsd[1],
            "kept_si_sdr": kept_si_sdr(aligned, reference, cutoff_hz),
            "energy_above_cutoff_db": energy_above_db(aligned, reference, cutoff_hz)}


def score(test: Audio, reference: Audio, cutoff_hz: float | None, with_visqol: bool) -> dict:
    """Every measure of `test` against the lossless `reference` (see the module docstring):
    reference_metrics' figures, plus lsd_above_cutoff (dB, from cutoff_hz, the decode's cutoff
    (control_edge), to Nyquist: the band a restoration has to fill) and ViSQOL on the loudest VISQOL_SECONDS."""
    out = compare.reference_metrics(test, reference, with_visqol=False)
    test_r = blocks.resample(test, reference.rate)
    lag, gain = compare.align(test_r, reference)
    aligned = compare.apply_alignment(test_r, lag, gain or 1.0, reference.frames)
    out["lsd_above_cutoff"] = (round(compare.lsd_db(aligned, reference, lo_hz=cutoff_hz), 4)
                               if cutoff_hz else None)
    out["abs_loudness_diff_lu"] = (abs(out["loudness_diff_lu"]) if out.get("loudness_diff_lu") is not None else None)
    if cutoff_hz:
        out["kept_si_sdr"] = _round(kept_si_sdr(aligned, reference, cutoff_hz))
        out["energy_above_cutoff_db"] = _round(energy_above_db(aligned, reference, cutoff_hz))
    out["source_top_db"] = _round(top_level_db(reference))
    if with_visqol:
        a, b = loudest_window(reference, VISQOL_SECONDS)
        v = compare.visqol(Audio(aligned.samples[:, a:b].copy(), reference.rate),
                           Audio(reference.samples[:, a:b].copy(), reference.rate))
        out["visqol"] = None if v is None else round(v, 4)
    return out


class ScoreCache:
    """Scores by (test audio, reference audio, options): a JSON file, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    # A change to the measures' code (restore/analysis/, this file) makes old scores stale.
    CODE = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (blocks, compare, spectrum))
                          + Path(__file__).read_bytes()).hexdigest()[:12]

    def key(self, test_sha: str, ref_sha: str, cutoff: float | None, with_visqol: bool) -> str:
        return f"v{HARNESS_VERSION}:{self.CODE}:{test_sha[:24]}:{ref_sha[:24]}:{cutoff}:{int(with_visqol)}"

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        self.data[key] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


# ---- Verdicts -----------------------------------------------------------------------------------

def verdict(variant: dict, decode: dict, noise: dict) -> str:
    """'better', 'no better' or 'worse on a, b' for one variant's scores against the two
    controls' (see HIGH_WIN_DB and VERDICT_RULES); a loss wins over a high-band gain."""
    losses = []
    for key, (direction, tol) in VERDICT_RULES.items():
        v, d = variant.get(key), decode.get(key)
        if v is None or d is None:
            continue
        if (v > d + tol) if direction == "lower" else (v < d - tol):
            losses.append(key.replace("abs_loudness_diff_lu", "loudness"))
    hv, hd, hn = variant.get("lsd_above_16k"), decode.get("lsd_above_16k"), noise.get("lsd_above_16k")
    ev, ed = variant.get("energy_above_cutoff_db"), decode.get("energy_above_cutoff_db")
    if ev is not None and ev > ENERGY_TOL_DB and (ed is None or ev > ed + 0.1):
        losses.append("too bright above the cutoff")
    if is_dark(variant) and hv is not None and hd is not None and hv > hd + DARK_TOL_DB:
        losses.append("dark top")
    if losses:
        return "worse on " + ", ".join(losses)
    if hv is None or hd is None:
        return "no better (no band above 16 kHz)"
    if is_dark(variant):
        return "kept dark"
    controls = [c for c in (hd, hn) if c is not None]
    if hv <= min(controls) - HIGH_WIN_DB:
        if ev is not None and ev < -ENERGY_TOL_DB:
            return "no better (too dark above the cutoff)"
        return "better"
    if hv <= hd - HIGH_WIN_DB:
        return "no better (noise control does as well)"
    return "no better"


def is_dark(scores: dict) -> bool:
    """The source's top is dark (see DARK_TOP_DB): a restoration must leave it as the decode has it."""
    top = scores.get("source_top_db")
    return top is not None and top < DARK_TOP_DB


# ---- Encodes and runs ------------------------------------------------------------------------

def find_clips(devset: Path, names: list[str] | None) -> list[Clip]:
    """The dev set's clips (all FLACs in it, sorted) or the named ones; a name may also be a
    path to any lossless file."""
    if names:
        paths = [Path(n) if Path(n).suffix else devset / f"{n}.flac" for n in names]
    else:
        paths = sorted(devset.glob("*.flac"))
    missing = [p for p in paths if not p.exists()]
    if missing or not paths:
        raise SystemExit(f"no such clip: {', '.join(map(str, missing)) or devset}"
                         " (build the dev set: python scripts/make_devset.py)")
    return [Clip(p.stem, p, file_sha(p)) for p in paths]


def encode(clip: Clip, kbps: int, mp3_dir: Path) -> Path:
    """OUT/mp3/<clip>_<kbps>k.mp3, re-encoded only when the source or LAME changed."""
    import lameenc

    from restore.io.lame import encode_mp3

    mp3 = mp3_dir / f"{clip.name}_{kbps}k.mp3"
    stamp = mp3.with_suffix(".json")
    want = {"source_sha256": clip.sha, "kbps": kbps, "lameenc": getattr(lameenc, "__version__", "?")}
    try:
        if mp3.exists() and json.loads(stamp.read_text(encoding="utf-8")) == want:
            return mp3
    except (OSError, ValueError):
        pass
    mp3_dir.mkdir(parents=True, exist_ok=True)
    tmp = mp3.with_name(mp3.name + ".tmp")
    tmp.write_bytes(encode_mp3(read_audio(clip.path), bitrate=kbps))
    os.replace(tmp, mp3)
    stamp.write_text(json.dumps(want), encoding="utf-8")
    return mp3


def run_variants(mp3s: list[Path], runs_dir: Path, variants_spec: str, stage_options: dict) -> dict:
    """Run 01_baseline and the chosen variants over the MP3s through the library; returns
    {(mp3 name, variant): (status, output path or None, reason)}."""
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants

    inputs = [str(p) for p in mp3s]
    # The decode is cached (its markers say when it is still valid). The variants under test
    # are always made again: a stage's code can change without its revision number, and a
    # marker would then hand back the output of an older version of it to be scored.
    results = run(RunConfig(inputs=inputs, out_dir=runs_dir, variants=resolve_variants("01_baseline"),
                            report=False)).results
    tested = [v for v in variants_spec.split(",") if v.strip()]
    if tested:
        results += run(RunConfig(inputs=inputs, out_dir=runs_dir, variants=resolve_variants(",".join(tested)),
                                 report=False, redo=True, stage_options=stage_options)).results
    return {(Path(r.song).name, r.variant): (r.status, Path(r.output) if r.output else None, r.reason)
            for r in results}


# ---- Tables ---------------------------------------------------------------------------------------

COLUMNS = [  # (key, heading, format)
    ("lsd_full", "LSD", "{:.2f}"),
    ("lsd_below_16k", "LSD<16k", "{:.2f}"),
    ("lsd_above_16k", "LSD>16k", "{:.2f}"),
    ("lsd_above_cutoff", "LSD>cut", "{:.2f}"),
    ("kept_si_sdr", "SI-SDR kept", "{:.2f}"),
    ("energy_above_cutoff_db", "E>cut", "{:+.1f}"),
    ("si_sdr", "SI-SDR (info)", "{:.1f}"),
    ("visqol", "ViSQOL", "{:.2f}"),
    ("loudness_diff_lu", "dLUFS", "{:+.2f}"),
    ("band:8000-12000", "E8-12k", "{:+.1f}"),
    ("band:12000-16000", "E12-16k", "{:+.1f}"),
    ("band:16000-20000", "E16-20k", "{:+.1f}"),
    ("band:20000-24000", "E20k+", "{:+.1f}"),
]


def cell(scores: dict | None, key: str, fmt: str) -> str:
    if not scores:
        return "-"
    value = scores.get("band_error_db", {}).get(key[5:]) if key.startswith("band:") else scores.get(key)
    return "-" if value is None else fmt.format(value)


def row_cells(row: dict) -> list[str]:
    return [cell(row.get("scores"), key, fmt) for key, _, fmt in COLUMNS]


def print_group(clip: str, kbps: int, cutoff: str, rows: list[dict]) -> None:
    print(f"\n{clip} @ {kbps} kbps (decode cutoff {cutoff})")
    heads = ["", *[h for _, h, _ in COLUMNS], "verdict"]
    table = [[r["row"], *row_cells(r), r["verdict"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *table)]
    for line in (heads, *table):
        print("  " + "  ".join(str(x).rjust(w) if i and i < len(line) - 1 else str(x).ljust(w)
                               for i, (x, w) in enumerate(zip(line, widths))))


PARTS = (("held-out", "Held-out part (no setting was chosen by looking at these clips)"),
         ("tuned", "Tuned part (the settings were chosen on these clips)"), ("other", "Other clips"))


def markdown(results: list[dict], meta: dict) -> str:
    heads = ["clip", "kbps", "output", *[h for _, h, _ in COLUMNS], "verdict"]
    lines = [f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}; {meta['seconds']:.0f} s.  ",
             f"Units: LSD in dB (lower is better), SI-SDR in dB, ViSQOL MOS-LQO on the loudest "
             f"{VISQOL_SECONDS:g} s, dLUFS = output minus source, E<band> = band energy error in dB. "
             "SI-SDR kept: both signals low-passed "
             f"{KEPT_MARGIN_HZ:g} Hz under the decode's cutoff; E>cut: energy above that cutoff, output over "
             "source (dB); SI-SDR (info): full band, information only. "
             f"Noise control: the decode + white noise at {NOISE_DBFS:g} dBFS RMS above the decode's cutoff "
             "(as measured; LAME's nominal lowpass where none is measured), seeded. LSD>cut: from that edge up. "
             f"Verdict: 'better' = LSD>16k at least {HIGH_WIN_DB} dB under both controls, E>cut within "
             f"+-{ENERGY_TOL_DB:g} dB, and no loss against the decode beyond "
             + ", ".join(f"{k} {t}" for k, (_, t) in VERDICT_RULES.items())
             + f"; E>cut over +{ENERGY_TOL_DB:g} dB is a loss; a clip whose source's top is dark (mean bin level "
             f"above 16 kHz under {DARK_TOP_DB:g} dB) must keep LSD>16k within {DARK_TOL_DB} dB of the decode's "
             "('kept dark')."]
    for part, title in PARTS:
        rows = [r for r in results if r.get("part", "other") == part]
        if not rows:
            continue
        lines += ["", f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for r in rows:
            lines.append("| " + " | ".join([r["clip"], str(r["kbps"]), r["row"], *row_cells(r), r["verdict"]]) + " |")
    return "\n".join(lines) + "\n"


def clip_parts(devset: Path) -> dict[str, str]:
    """{clip name: 'tuned' or 'held-out'} from the dev set's MANIFEST.json (scripts/make_devset.py)."""
    try:
        manifest = json.loads((devset / "MANIFEST.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: m.get("part", "tuned") for name, m in manifest.items()}


# ---- Main -----------------------------------------------------------------------------------------

DEFAULT_DEVSET = ROOT / "build" / "devset"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="11", help="variants to score besides the controls, e.g. 11,08 ('' for none)")
    ap.add_argument("--bitrates", default="128,192", help="CBR bitrates in kbps")
    ap.add_argument("--clips", default="", help="clip names in the dev set (or paths to lossless files); default all")
    ap.add_argument("--devset", type=Path, default=DEFAULT_DEVSET,
                    help="the lossless clips (default: build/devset, built first if it is not there)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "quality")
    ap.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (the slowest measure)")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="a stage option, as `mp3restore run --set`")
    args = ap.parse_args(argv)
    t0 = time.time()
    from bench.common import machine_line

    if args.devset == DEFAULT_DEVSET and not (args.devset / "READY").exists() and not args.clips:
        # One command: build the dev set first (it checks its packages and installs nothing).
        import runpy
        make_devset = runpy.run_path(str(ROOT / "scripts" / "make_devset.py"))["main"]
        code = make_devset(["--out", str(args.devset)])
        if code:
            return code
    clips = find_clips(args.devset, [c for c in args.clips.split(",") if c.strip()])
    parts = clip_parts(args.devset)
    bitrates = [int(b) for b in args.bitrates.split(",") if b.strip()]
    stage_options: dict[str, dict[str, object]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        stage, _, opt = key.partition(".")
        stage_options.setdefault(stage, {})[opt] = value
    with_visqol = not args.no_visqol and compare._visqol_api() is not None
    args.out.mkdir(parents=True, exist_ok=True)
    cache = ScoreCache(args.out / "scores-cache.json")

    mp3s = {(c.name, k): encode(c, k, args.out / "mp3") for c in clips for k in bitrates}
    print(f"encoded {len(mp3s)} MP3s; running 01_baseline + [{args.variants}] through restore.engine.run.run ...",
          flush=True)
    runs = run_variants(list(mp3s.values()), args.out / "runs", args.variants, stage_options)
    variant_names = sorted({v for (_, v) in runs if v and v != "01_baseline"})

    results: list[dict] = []
    for clip in clips:
        reference = read_audio(clip.path)
        ref_sha = audio_sha(reference)
        for kbps in bitrates:
            name = mp3s[(clip.name, kbps)].name
            status, dec_path, reason = runs.get((name, "01_baseline"), ("missing", None, "no result"))
            if dec_path is None or not dec_path.is_file():
                print(f"\n{clip.name} @ {kbps}: the decode failed: {reason}")
                continue
            decode = read_audio(dec_path)
            cutoff, how = control_edge(decode, kbps)
            control, edge = noise_control(decode, cutoff)
            candidates = [("decode (01)", "control", decode), (f"noise {NOISE_DBFS:g} dBFS >{edge / 1000:.1f}k",
                                                                "control", control)]
            rows = []
            for vname in variant_names:
                vstatus, vpath, vreason = runs.get((name, vname), ("missing", None, "no result"))
                if vpath is not None and vpath.is_file():
                    candidates.append((vname, "variant", read_audio(vpath)))
                else:
                    why = "not scored: a stems folder" if vpath is not None and vpath.is_dir() else f"{vstatus}: {vreason}"
                    rows.append({"row": vname, "kind": "variant", "scores": None, "verdict": why[:90]})
            scored = []
            for label, kind, audio in candidates:
                key = cache.key(audio_sha(audio), ref_sha, cutoff, with_visqol)
                s = cache.get(key)
                if s is None:
                    s = score(audio, reference, cutoff, with_visqol)
                    cache.put(key, s)
                scored.append({"row": label, "kind": kind, "scores": s, "verdict": ""})
            dec_s, noise_s = scored[0]["scores"], scored[1]["scores"]
            scored[0]["verdict"] = "control"
            scored[1]["verdict"] = "control (trap)"
            for r in scored[2:]:
                r["verdict"] = verdict(r["scores"], dec_s, noise_s)
            group = scored + rows
            for r in group:
                r.update(clip=clip.name, kbps=kbps, cutoff_hz=cutoff, cutoff_found=how)
            for r in group:
                r["part"] = parts.get(clip.name, "other") if clip.path.parent == args.devset else "other"
            results += group

    for part, title in PARTS:
        groups: dict = {}
        for r in results:
            if r["part"] == part:
                groups.setdefault((r["clip"], r["kbps"]), []).append(r)
        if groups:
            print(f"\n==== {title} ====")
        for (name, kbps), group in groups.items():
            print_group(name, kbps, f"{group[0]['cutoff_hz']:.0f} Hz, {group[0]['cutoff_found']}", group)

    seconds = time.time() - t0
    meta = {
        "command": "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_line().replace("[machine] ", ""),
        "seconds": seconds, "harness_version": HARNESS_VERSION, "noise_dbfs": NOISE_DBFS, "noise_seed": NOISE_SEED,
        "visqol": with_visqol, "visqol_seconds": VISQOL_SECONDS, "high_win_db": HIGH_WIN_DB,
        "verdict_rules": VERDICT_RULES, "clips": {c.name: {"path": str(c.path), "sha256": c.sha} for c in clips},
        "bitrates": bitrates,
    }
    (args.out / "quality.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1), encoding="utf-8")
    (args.out / "RESULTS-quality.md").write_text(markdown(results, meta), encoding="utf-8")
    print(f"\nwrote {args.out / 'RESULTS-quality.md'} and {args.out / 'quality.json'} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
