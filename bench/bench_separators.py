#!/usr/bin/env python3
"""The `separate` stage's models on the CPU, full size, random weights: what each costs.

    python bench/bench_separators.py                                  # all, 12 s song
    python bench/bench_separators.py --only rtf --model scnet_xl_ihf --seconds 12
    python bench/bench_separators.py --only loads

  rtf    each model (--model, repeatable; default: htdemucs, htdemucs_ft, scnet_xl_ihf,
         bs_roformer, bs_roformer_vocals) at FULL SIZE with random weights, saved where and
         as the published files are (msst: a plain state dict at the catalogue's path, trusted
         by name since a random file cannot have the published sha256; demucs: its local repo
         folder) and loaded by the stage, separates a --seconds stereo 44.1 kHz song
         (tests.support.examples.band), each in a fresh child process: load time, wall time,
         seconds per audio second, peak RSS (VmHWM). Compute does not depend on the weights'
         values, so the timing is the published models'. MSST's chunking pads a song by
         chunk - chunk/num_overlap either side, so a short song costs more per second than a
         long one: the "long song" figure is num_overlap x the time per second of chunk.
  loads  three short songs through 04_stems with a tiny SCNet: model loads per run.

Benchmarks print figures; they never assert.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, machine_line, run_parts, say, vm_hwm_mib, work_folder  # noqa: E402

PARTS = ("rtf", "loads")
MODELS = ("htdemucs", "htdemucs_ft", "scnet_xl_ihf", "bs_roformer", "bs_roformer_vocals")


def child_rtf(work: Path, model: str, seconds: float) -> dict:
    import warnings

    import torch
    warnings.simplefilter("ignore")
    from restore.models.devices import choose_device
    from restore.models.store import CATALOGUE
    from restore.stages import StageContext, StageEnv, get_stage
    from tests.support.examples import band
    folder = work / model
    trusted = ()
    if model.startswith("htdemucs"):
        from tests.support.random_demucs import FULL, save_repo
        save_repo(folder / "demucs", model, **FULL)
    else:
        from tests.support.random_msst import random_separator
        spec = CATALOGUE[model]
        path = folder / spec.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_separator(model, config=spec.config["model"]).state_dict(), str(path))
        trusted = (path,)
    before = vm_hwm_mib()
    t0 = time.perf_counter()
    stage = get_stage("separate", StageEnv(models_dir=folder, trusted_model_files=trusted,
                                           options={"separate": {"model": model}}))
    stage.load(choose_device("cpu"))
    load_s = time.perf_counter() - t0
    audio = band(seconds, seed=1)
    ctx = StageContext()
    t0 = time.perf_counter()
    stems = stage.process(audio, ctx)
    wall = time.perf_counter() - t0
    net = stage.bag if model.startswith("htdemucs") else stage.model
    result = {"load_s": load_s, "wall_s": wall, "per_audio_s": wall / seconds, "stems": list(stems),
              "frames_ok": all(s.frames == audio.frames for s in stems.values()), "threads": torch.get_num_threads(),
              "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "rss_before_mib": before,
              "rss_peak_mib": vm_hwm_mib()}
    if not model.startswith("htdemucs"):
        from restore.models.demix import chunk_starts
        cfg = stage.spec.config
        chunk, overlap = cfg["chunk_size"], stage.num_overlap
        border = chunk - chunk // overlap
        frames = audio.frames + (2 * border if audio.frames > 2 * border else 0)
        chunk_s = len(chunk_starts(frames, chunk, overlap)) * chunk / 44100
        result.update(chunk_seconds=chunk_s, long_song_per_audio_s=overlap * wall / chunk_s, num_overlap=overlap)
    return result


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        say("rtf", f"child failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PARTS)
    parser.add_argument("--seconds", type=float, default=12.0, help="song length for rtf (default 12 s)")
    parser.add_argument("--model", action="append", choices=MODELS, help="model for rtf (repeatable; default all)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        work, model, seconds = args.child
        print(json.dumps(child_rtf(Path(work), model, float(seconds))))
        return 0
    print(machine_line(), flush=True)
    with work_folder("bench-separators-", args.work, args.keep) as work:
        def rtf():
            for model in args.model or MODELS:
                r = run_child(str(work), model, str(args.seconds))
                if not r:
                    continue
                line = (f"{model}: {r['params_m']:.2f} M parameters (random), {args.seconds:g} s stereo 44.1 kHz, CPU, "
                        f"{r['threads']} torch threads: load {r['load_s']:.1f} s, process {r['wall_s']:.1f} s = "
                        f"{r['per_audio_s']:.2f} s per audio second; peak RSS {r['rss_peak_mib']:.0f} MiB "
                        f"({r['rss_before_mib']:.0f} before the load); stems {', '.join(r['stems'])}; "
                        f"exact length: {r['frames_ok']}")
                if "chunk_seconds" in r:
                    line += (f"; {r['chunk_seconds']:.0f} s of chunks (num_overlap {r['num_overlap']}): a long song "
                             f"about {r['long_song_per_audio_s']:.2f} s per audio second")
                say("rtf", line)

        def loads():
            import warnings
            warnings.simplefilter("ignore")
            from restore.engine.config import RunConfig
            from restore.engine.run import run
            from restore.engine.variants import resolve_variants
            from restore.models import store
            from tests.conftest import write_mp3
            from tests.support.examples import band
            from tests.support.random_msst import save_random_separator, tiny_spec
            store.CATALOGUE["scnet_xl_ihf"] = tiny_spec("scnet_xl_ihf")
            save_random_separator(work / "tiny" / store.CATALOGUE["scnet_xl_ihf"].filename, "scnet_xl_ihf")
            for i in range(3):
                write_mp3(work / "in" / f"{i}.mp3", band(1.5, seed=i), bitrate=128)
            summary = run(RunConfig(inputs=[str(work / "in")], out_dir=work / "out", models_dir=work / "tiny",
                                    variants=resolve_variants("04"), device="cpu", report=False))
            say("loads", f"3 songs, 04_stems with separate.model=auto (scnet_xl_ihf present): {summary.counts()} "
                         f"model loads {summary.model_loads}")

        run_parts([("rtf", rtf), ("loads", loads)], args.only or list(PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
