#!/usr/bin/env python3
"""Quick scorer for choosing the offline restore's settings (issue 14): the stage called
directly (no engine, no FLAC), on the dev set's TUNED part by default, with the harness's own
measures (bench/quality.py: kept-band SI-SDR, energy above the cutoff, LSD above/below 16 kHz).

    python bench/tune_offline_restore.py [--part tuned|held-out|all|trainset] [--set KEY=VALUE ...]
                                          [--grid KEY=v1,v2,...]

Prints one line per clip and bitrate and a summary per setting. The held-out part is for the
final check only: choose settings with --part tuned. --part trainset runs the level-training
mixes instead (build/trainset, scripts/make_trainset.py; about 2 minutes a setting, --quiet
recommended): the summary's rates over the pairs whose top was lost and whose source's top
is not dark are the ones bench/RESULTS.md gives for the kept floor. --part instruments
renders General MIDI instruments alone (eight notes each, the dev set's SoundFont, into
build/quality/instruments/) for revision 5's hole rule: tonal sounds whose floor between
partials is near silence.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import fit_offline_level as fit_level, quality  # noqa: E402
from restore.analysis import compare  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.decode import DecodeStage  # noqa: E402
from restore.stages.offline_restore.stage import OfflineRestoreStage  # noqa: E402


# --part instruments: GM program -> name (each plays scripts/make_devset.SOLO_NOTES alone)
INSTRUMENTS = {8: "celesta", 9: "glockenspiel", 10: "music_box", 12: "marimba", 13: "xylophone",
               14: "tubular_bells", 19: "church_organ", 21: "accordion", 46: "harp", 56: "trumpet",
               65: "alto_sax", 73: "flute", 80: "square_lead", 81: "saw_lead", 98: "crystal", 108: "kalimba",
               112: "tinkle_bell", 114: "steel_drums"}


def instrument_clips(out: Path) -> list[quality.Clip]:
    """Each of INSTRUMENTS alone, 4 s, peak -6 dBFS, as OUT/instruments/gmNNN_name.flac
    (rendered once; FluidSynth's float output, no reverb: the same file every time)."""
    import soundfile as sf
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_devset as dev

    folder = out / "instruments"
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for program, name in INSTRUMENTS.items():
        path = folder / f"gm{program:03d}_{name}.flac"
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp.flac")
            sf.write(str(tmp), dev.solo(program, 4.0).T, dev.RATE, subtype="PCM_24")
            tmp.replace(path)
        clips.append(quality.Clip(path.stem, path, quality.file_sha(path)))
    return clips


def decodes(devset: Path, part: str, bitrates, out: Path, clips=()):
    """[(clip, kbps, source, decode aligned to it, cutoff)] (the MP3s cached as the harness does)."""
    if part == "instruments":
        found = [c for c in instrument_clips(out) if not clips or c.name in clips]
        mp3_dir = out / "mp3-instruments"
    elif part == "trainset":
        found = [quality.Clip(p.stem, p, quality.file_sha(p)) for p in fit_level.clip_paths(devset, None)]
        found = [c for c in found if not clips or c.name in clips]
        mp3_dir = out / "mp3-train"            # where bench/fit_offline_level.py keeps them
    else:
        manifest = json.loads((devset / "MANIFEST.json").read_text(encoding="utf-8"))
        names = [n for n, m in manifest.items() if part == "all" or m.get("part", "tuned") == part]
        if clips:
            names = [n for n in names if n in clips]
        found, mp3_dir = quality.find_clips(devset, names), out / "mp3"
    items = []
    for clip in found:
        src = quality.read_audio(clip.path)
        for kbps in bitrates:
            mp3 = quality.encode(clip, kbps, mp3_dir)
            dec, facts = DecodeStage().read(mp3, StageContext())
            items.append((clip.name, kbps, src, dec, facts["cutoff_hz"]))
    return items


def run(items, options: dict) -> list[dict]:
    # tune.FIELD=VALUE: a HighsSettings field that is not an option (e.g. tune.empty_db=20)
    tuning = {k[5:]: float(v) for k, v in options.items() if k.startswith("tune.")}
    options = {k: v for k, v in options.items() if not k.startswith("tune.")}
    rows = []
    for name, kbps, src, dec, cutoff in items:
        stage = OfflineRestoreStage(StageEnv(options={"offline_restore": {k: str(v) for k, v in options.items()}}))
        stage.settings = dataclasses.replace(stage.settings, **tuning)
        ctx = StageContext(options={"cutoff_hz": cutoff, "bitrate_kbps": kbps})
        out = stage.process(dec, ctx)
        lag, gain = compare.align(dec, src)
        row = {"clip": name, "kbps": kbps, "cutoff": cutoff, "source_top_db": quality.top_level_db(src)}
        for label, audio in (("dec", dec), ("out", out)):
            a = compare.apply_alignment(audio, lag, gain or 1.0, src.frames)
            row[label] = quality.band_scores(a, src, cutoff or quality.LAME_LOWPASS_HZ.get(kbps, 16000.0))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devset", type=Path, default=ROOT / "build" / "devset")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "quality")
    ap.add_argument("--part", default="tuned", choices=["tuned", "held-out", "all", "trainset", "instruments"])
    ap.add_argument("--trainset", type=Path, default=ROOT / "build" / "trainset", help="with --part trainset")
    ap.add_argument("--bitrates", default="128,192")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--grid", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--clips", default="", help="only these clips (comma-separated)")
    args = ap.parse_args(argv)
    base = dict(s.split("=", 1) for s in args.set)
    grid = [(k, v.split(",")) for k, v in (g.split("=", 1) for g in args.grid)]
    items = decodes(args.trainset if args.part == "trainset" else args.devset, args.part,
                    [int(b) for b in args.bitrates.split(",")], args.out, [c for c in args.clips.split(",") if c])
    for combo in itertools.product(*[vals for _, vals in grid]) if grid else [()]:
        options = {**base, **{k: v for (k, _), v in zip(grid, combo)}}
        t0 = time.time()
        rows = run(items, options)
        worst_kept = min(r["out"]["kept_si_sdr"] - r["dec"]["kept_si_sdr"] for r in rows)
        brightest = max(r["out"]["energy_above_cutoff_db"] or -99 for r in rows)
        gain = np.mean([r["dec"]["lsd_above_16k"] - r["out"]["lsd_above_16k"] for r in rows])
        if not args.quiet:
            for r in rows:
                d, o = r["dec"], r["out"]
                print(f"  {r['clip']:16s} {r['kbps']} cut {r['cutoff'] or 0:6.0f}  LSD>16k {d['lsd_above_16k']:6.2f} -> "
                      f"{o['lsd_above_16k']:6.2f}  LSD<16k {o['lsd_below_16k'] - d['lsd_below_16k']:+.3f}  kept SI-SDR "
                      f"{o['kept_si_sdr'] - d['kept_si_sdr']:+.3f}  E>cut {d['energy_above_cutoff_db']:+6.1f} -> "
                      f"{o['energy_above_cutoff_db']:+6.1f}")
        lost = [r["out"]["energy_above_cutoff_db"] for r in rows if (r["dec"]["energy_above_cutoff_db"] or 0) < fit_level.LOST_DB]
        fit = np.array([r["out"]["energy_above_cutoff_db"] for r in rows     # the level fit's pairs
                        if fit_level.fit_pair(r["dec"]["energy_above_cutoff_db"], r["out"]["energy_above_cutoff_db"],
                                              r["source_top_db"])])
        rates = (f"; {len(fit)} such pairs with a top over {fit_level.BRIGHT_TOP_DB:.0f} dB: within 2 dB "
                 f"{np.mean(np.abs(fit) <= 2):.0%}, over 2 dB too bright {np.mean(fit > 2):.0%}, too dark "
                 f"{np.mean(fit < -2):.0%}") if len(fit) else ""
        print(f"{options}: mean LSD>16k gain {gain:.3f} dB, worst kept SI-SDR {worst_kept:+.3f}, "
              f"brightest E>cut {brightest:+.1f} dB; where the decode lost the top: E>cut mean {np.mean(lost):+.1f}, "
              f"mean |E| {np.mean(np.abs(lost)):.1f}, range {min(lost):+.1f}..{max(lost):+.1f}{rates} "
              f"({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
