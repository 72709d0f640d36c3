"""`mp3restore ghost ORIGINAL [ENCODED.mp3] --out DIR`: what an MP3 threw away, as FLACs to
listen to, spectrograms and ghost.json. The edge: reads the inputs, calls restore.report.ghost,
writes through restore.io.writers, prints a short summary. Exit codes: 0 done, 2 a usage or
input problem, 3 the output folder cannot be written."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import soundfile as sf
from rich.console import Console
from rich.table import Table

from restore.audio import Audio
from restore.io.read import read_audio
from restore.ui.console import safe
from restore.errors import InputError, RestoreError, UsageError
from restore.report.ghost import METHODS, GhostError, GhostResult, make_ghost
from restore.engine.scan import clean_user_path
from restore.status_codes import EXIT_OK, EXIT_SETUP, EXIT_USAGE

LAME_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)
_LOSSY = {"MP3", "MPEG", "OGG"}  # soundfile formats that are not an original


def add_ghost_parser(subparsers) -> argparse.ArgumentParser:
    """The `ghost` subcommand, added to the CLI's subparsers."""
    g = subparsers.add_parser(
        "ghost", help="hear what an MP3 threw away: the lossless original minus the MP3, four ways",
        description="Line the MP3 up with its lossless original (lag and gain found by cross-correlation) "
                    "and subtract it four ways: time-domain difference, complex spectral subtraction, "
                    "polar (magnitude) subtraction and a mask. Writes one 24-bit FLAC per method, "
                    "spectrograms on one scale and ghost.json to DIR.")
    g.add_argument("original", metavar="ORIGINAL", help="the lossless original: WAV, FLAC or AIFF")
    g.add_argument("encoded", nargs="?", metavar="ENCODED.mp3",
                   help="its MP3 (default: encode ORIGINAL with LAME at --bitrate into DIR)")
    g.add_argument("--out", "-o", required=True, metavar="DIR", help="where the ghosts go")
    g.add_argument("--bitrate", type=int, default=128, metavar="KBPS",
                   help="CBR bitrate when ENCODED is not given (default 128)")
    g.add_argument("--mask-db", type=float, default=6.0, metavar="DB",
                   help="mask method: keep the original's bins where the MP3 is more than DB quieter (default 6)")
    return g


def ghost_command(args: argparse.Namespace, console: Console) -> int:
    """Run `ghost` for parsed `args`; returns the exit code."""
    try:
        original_path = _existing_file(clean_user_path(args.original), "ORIGINAL")
        out = clean_user_path(args.out)
        original = read_original(original_path)
        if args.encoded:
            mp3_path, made_with = _existing_file(clean_user_path(args.encoded), "ENCODED"), None
        else:
            mp3_path = encode_original(original, original_path, out, args.bitrate)
            made_with = f"LAME 3.100 (lameenc), {args.bitrate} kbps CBR"
        mp3, facts = _decode(mp3_path)
        result = make_ghost(original, mp3, args.mask_db)
        files = write_ghost(result, original, out, {
            "original": str(original_path), "encoded": str(mp3_path), "encoded_here_with": made_with,
            "rate": original.rate, "channels": original.channels, "frames": original.frames,
            "mp3_cutoff_hz": facts.get("cutoff_hz"), "mp3_gapless_tag": facts.get("gapless"),
        })
    except (UsageError, InputError, GhostError) as exc:
        text = exc.one_line() if isinstance(exc, RestoreError) else str(exc)
        console.print(f"[bold red]error:[/] {safe(text)}", soft_wrap=True)
        return EXIT_USAGE
    except RestoreError as exc:  # writing failed: disk full, no permission, a file in the way
        console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
        return EXIT_SETUP
    print_ghost(console, result, original_path, mp3_path, out, files)
    return EXIT_OK


def _existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{what} does not exist", path)
    if not path.is_file():
        raise UsageError(f"{what} is not a file", path)
    return path


def read_original(path: Path) -> Audio:
    """The lossless original as float32 [channels, frames]; UsageError for an MP3 or
    anything soundfile cannot read."""
    if path.suffix.lower() == ".mp3":
        raise UsageError("ORIGINAL is an MP3: the ghost needs the lossless original", path,
                         "give the WAV, FLAC or AIFF first, then its MP3")
    try:
        info = sf.info(str(path))
        if info.format in _LOSSY:
            raise UsageError(f"ORIGINAL is lossy ({info.format})", path, "give the lossless original (WAV, FLAC, AIFF)")
        audio = read_audio(path)
    except (RuntimeError, TypeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise UsageError("ORIGINAL is not an audio file that can be read", path, "WAV, FLAC or AIFF") from exc
    except ValueError as exc:
        raise UsageError(f"ORIGINAL cannot be used ({exc})", path) from exc
    if audio.frames == 0:
        raise UsageError("ORIGINAL holds no audio", path)
    return audio


def encode_original(original: Audio, original_path: Path, out: Path, bitrate: int) -> Path:
    """Encode the original with LAME to DIR/<name>.<bitrate>k.mp3 (written atomically)."""
    from restore.io.lame import encode_mp3
    from restore.io.writers import write_bytes_atomic

    if bitrate not in LAME_BITRATES:
        raise UsageError(f"--bitrate {bitrate} is not an MP3 bitrate", None,
                         f"one of {', '.join(map(str, LAME_BITRATES))}")
    if original.channels > 2:
        raise UsageError(f"ORIGINAL has {original.channels} channels; MP3 holds at most 2", original_path)
    try:
        data = encode_mp3(original, bitrate=bitrate)
    except RuntimeError as exc:
        raise UsageError(f"LAME cannot encode ORIGINAL at {bitrate} kbps ({exc})", original_path) from exc
    path = out / f"{original_path.stem}.{bitrate}k.mp3"
    write_bytes_atomic(path, data, "writing the MP3")
    return path


def _decode(path: Path) -> tuple[Audio, dict]:
    from restore.stages import StageContext
    from restore.stages.decode import DecodeStage

    return DecodeStage().read(path, StageContext())


def write_ghost(result: GhostResult, original: Audio, out: Path, about: dict) -> list[Path]:
    """One 24-bit FLAC per method, spectrograms on one shared scale, ghost.json. Returns the paths."""
    from restore.report.plots import SpectrogramScale, spectrogram_png
    from restore.io.writers import write_bytes_atomic, write_flac

    scale = SpectrogramScale(max_hz=original.rate / 2)
    files = [spectrogram_png(original, out / "spectrogram_original.png", "original", scale),
             spectrogram_png(result.mp3, out / "spectrogram_mp3.png",
                             f"MP3, lined up ({result.lag} samples, gain {result.gain:.3f})", scale)]
    doc = {**about, **result.to_dict()}
    for method in METHODS:
        flac, png = out / f"ghost_{method}.flac", out / f"spectrogram_ghost_{method}.png"
        record = write_flac(result.ghosts[method], flac)
        files += [flac, spectrogram_png(result.ghosts[method], png, f"ghost: {method}", scale)]
        doc["methods"][method].update(file=flac.name, spectrogram=png.name, clipped_samples=record["clipped"])
    doc["note"] = ("complex equals difference within rounding: the STFT is linear. polar keeps only what the MP3 "
                   "made quieter; mask keeps the original where the MP3 is more than mask_db quieter.")
    text = json.dumps(doc, indent=1, default=str) + "\n"
    write_bytes_atomic(out / "ghost.json", text.encode("utf-8"), "writing ghost.json")
    return files + [out / "ghost.json"]


def print_ghost(console: Console, result: GhostResult, original_path: Path, mp3_path: Path, out: Path,
                files: list[Path]) -> None:
    late = "late" if result.lag >= 0 else "early"
    console.print(f"[bold]ghost[/] of {safe(original_path.name)} minus {safe(mp3_path.name)}", soft_wrap=True)
    console.print(f"MP3 lined up: {abs(result.lag)} samples {late} ({abs(1000 * result.lag / result.rate):.1f} ms), "
                  f"gain {result.gain:.4f} ({20 * math.log10(result.gain):+.2f} dB)")
    table = Table(title="ghost energy vs the original, dB", title_justify="left")
    table.add_column("band")
    for method in METHODS:
        table.add_column(method, justify="right")
    table.add_row("all", *(f"{result.energy_db[m]:.1f}" for m in METHODS))
    for band in result.bands_db[METHODS[0]]:
        levels = (result.bands_db[m][band] for m in METHODS)
        table.add_row(band, *("-" if v is None else f"{v:.1f}" for v in levels))
    console.print(table)
    if result.energy_db["difference"] > -3.0:
        console.print("[yellow]warning:[/] the MP3 cancels little of the original: "
                      "is it the same recording and master?")
    if result.uncovered_frames:
        console.print(f"[yellow]note:[/] {result.uncovered_frames} frames of the original have no MP3 under them "
                      "and are left whole in the ghosts")
    console.print(f"wrote {len(files)} files to {safe(out)}", soft_wrap=True)
