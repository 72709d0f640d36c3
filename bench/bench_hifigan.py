#!/usr/bin/env python3
"""HiFi-GAN+ (08_hifigan) benchmarks on the CPU: model loads per run, non-model overhead, real-time factor.

    python bench/bench_hifigan.py                   # all three (about 20 minutes on 2 cores)
    python bench/bench_hifigan.py --only loads      # or overhead, or rtf; --only may be repeated
    python bench/bench_hifigan.py --work /big/disk --keep

The model is the FULL-SIZE HiFi-GAN+ architecture (tests.support.random_hifigan.HifiGanPlus,
default arguments, about 1.06 M parameters) with random weights, scripted and saved as
TorchScript the way the published checkpoints are (save_random_hifigan). Compute cost does
not depend on the weight values, so the timings are those of the published model; the sound
is noise. Inputs are generated (restore.examples.band, + encode_mp3 for the CLI part) into a
temporary folder that is removed at the end (--keep leaves it); making them is not timed.
Benchmarks print figures; they never assert.

  loads     3 songs of ~10 s through the CLI with --variants 01,08, --order song and --order
            stage: model_loads from the --json summary (must be 1 per model).
  overhead  one 60 s stereo 44.1 kHz song through HifiganBweStage.process on the CPU; the
            model is wrapped in a timer, so overhead = (process - time inside the model) /
            process: the chunker, numpy<->torch conversion, level matching. Target <= 3 %.
  rtf       a 180 s stereo 44.1 kHz song through HifiganBweStage.process: wall time, real-time
            factor, peak RSS. If 180 s is predicted (from the warm-up) to take more than
            --max-minutes (8), 60 s is measured and the 180 s figure extrapolated by the number
            of 12 s chunks (it says so).

The model is loaded only in fresh child processes (overhead and rtf each get one; this
process never imports torch), so that ru_maxrss is the child's own: Linux carries a parent's
peak RSS over into a child's ru_maxrss across fork+exec. Each such part warms up first
(TorchScript profiles and optimises the graph during the first calls) and says so.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, cmd_text, machine_line, run_parts, say, work_folder  # noqa: E402

CLI = [sys.executable, str(ROOT / "mp3restore.py")]
MiB = 1 << 20






def rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- shared pieces

def make_model(folder: Path) -> Path:
    """The full-size random-weight HiFi-GAN+ under the name the stage looks for; returns
    the models folder."""
    import torch
    from restore.models.store import CATALOGUE
    from tests.support.random_hifigan import save_random_hifigan
    path = save_random_hifigan(folder / CATALOGUE["hifigan-bwe"].filename)
    params = sum(p.numel() for p in torch.jit.load(str(path)).parameters())
    say("model", f"HiFi-GAN+ (save_random_hifigan, default = full-size architecture), random weights, "
                 f"{params / 1e6:.3f} M parameters, TorchScript file {path.stat().st_size / MiB:.1f} MiB: "
                 f"$WORK/models/{path.name}")
    return folder


class TimedModel:
    """Stands in for stage.model: times every real call (the stage calls model(x, rate)
    inside its chunker callback). On the CPU a call is synchronous, so the time is exact."""

    def __init__(self, model):
        self.model = model
        self.calls: list[tuple[tuple[int, ...], float]] = []   # (input shape, seconds)

    def __call__(self, x, rate):
        t0 = time.perf_counter()
        y = self.model(x, rate)
        self.calls.append((tuple(x.shape), time.perf_counter() - t0))
        return y

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.calls)

    def describe(self, rate: int) -> str:
        parts = [f"{shape[0]}x{shape[-1] / rate:.2f} s: {s:.1f} s" for shape, s in self.calls]
        return f"{len(self.calls)} calls (items x input length: seconds) " + "; ".join(parts)


def load_stage(models: Path):
    """HifiganBweStage loaded on the CPU, its model wrapped in a TimedModel."""
    import torch
    from restore.models.devices import choose_device
    from restore.stages import StageEnv
    from restore.stages.bwe_hifigan import HifiganBweStage
    device = choose_device("cpu")
    stage = HifiganBweStage(StageEnv(models_dir=models))
    t0 = time.perf_counter()
    stage.load(device)
    load_s = time.perf_counter() - t0
    stage.model = TimedModel(stage.model)
    return stage, device, load_s, torch


def warm_up(stage, section: str, seconds: float = 4.0, calls: int = 2) -> float:
    """Run process() on a short clip `calls` times: TorchScript profiles and optimises the
    graph during its first calls, which must not count. Returns the model's seconds per
    item-second (one channel, one second of input) in the last call."""
    from tests.support.examples import band
    from restore.stages import StageContext
    clip = band(seconds, seed=99)
    per_item_s = 0.0
    for i in range(calls):
        stage.model.calls.clear()
        t0 = time.perf_counter()
        stage.process(clip, StageContext())
        wall = time.perf_counter() - t0
        items = sum(shape[0] * shape[-1] for shape, _ in stage.model.calls) / clip.rate
        per_item_s = stage.model.seconds / items
        say(section, f"warm-up call {i + 1} of {calls} (not counted): process() on {seconds:.0f} s stereo took {wall:.2f} s, "
                     f"{per_item_s:.2f} s of model time per item-second")
    stage.model.calls.clear()
    return per_item_s


# ---------------------------------------------------------------- 1. loads

def bench_loads(work: Path, models: Path, n_songs: int, seconds: float) -> None:
    S = "loads"
    from tests.support.examples import band, tag_mp3
    from restore.io.lame import encode_mp3
    src = work / "loads_in"
    say(S, f"generating {n_songs} songs x {seconds:.0f} s (stereo 44.1 kHz, 192 kbps CBR), untimed ...")
    for i in range(n_songs):
        p = src / "Bench Band" / "Loads Album" / f"{i + 1:02d} Song {i + 1}.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_mp3(band(seconds, seed=i), bitrate=192))
        tag_mp3(p, f"Song {i + 1}", "Bench Band", "Loads Album", f"{i + 1}/{n_songs}")
    for order in ("song", "stage"):
        out = work / f"loads_out_{order}"
        args = CLI + ["run", str(src), "--out", str(out), "--variants", "01,08", "--models-dir", str(models),
                      "--device", "cpu", "--order", order, "-q", "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        say(S, f"command: {cmd_text(args, work)}")
        try:
            summary = json.loads(proc.stdout)
        except ValueError:
            say(S, f"  ! exit code {proc.returncode}, no JSON on stdout; stderr tail: {proc.stderr[-800:]}")
            continue
        loads = summary.get("model_loads", {})
        verdict = "1 load per model, as required" if loads and all(v == 1 for v in loads.values()) \
            else "NOT 1 load per model"
        say(S, f"  --order {order}: exit {proc.returncode}, counts {summary['counts']}, wall {wall:.1f} s")
        say(S, f"  --order {order}: model_loads {loads} -> {verdict}")
        for reason in sorted({r["reason"] for r in summary.get("results", []) if r.get("status") in ("unavailable", "failed")}):
            say(S, f"  ! {reason}")
        log_loads = sum(line.count("loaded bwe_hifigan") for p in (out / "_logs").glob("run-*.log")
                        for line in p.read_text().splitlines())
        say(S, f"  --order {order}: cross-check, 'loaded bwe_hifigan' lines in the run log: {log_loads}")
        flacs = sorted((out / "08_hifigan").rglob("*.flac"))
        if flacs:
            import soundfile as sf
            info = sf.info(str(flacs[0]))
            say(S, f"  --order {order}: 08_hifigan wrote {len(flacs)} FLACs; first: {info.samplerate} Hz, "
                   f"{info.channels} ch, {info.duration:.3f} s, {info.subtype}")
        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- 2. overhead

def bench_overhead(models: Path, seconds: float) -> None:
    S = "overhead"
    import numpy as np
    from restore.models.chunking import overlap_add
    from tests.support.examples import band
    from restore.stages import StageContext
    from restore.analysis.spectrum import level_match_gain
    from restore.stages import bwe_hifigan as bwe

    stage, device, load_s, torch = load_stage(models)
    say(S, f"device {device.describe()}; torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}; "
           f"model loaded in {load_s:.2f} s")
    warm_up(stage, S)
    audio = band(seconds, seed=7)
    say(S, f"song: band({seconds:.0f} s), stereo {audio.rate} Hz, {audio.frames} frames (not from an MP3: cutoff "
           f"unknown, so level matching uses its default band, 40 Hz-16 kHz)")
    lines: list[str] = []
    t0 = time.perf_counter()
    out = stage.process(audio, StageContext(log=lines.append))
    process_s = time.perf_counter() - t0
    model_s = stage.model.seconds
    share = (process_s - model_s) / process_s
    say(S, f"HifiganBweStage.process: {process_s:.2f} s wall for {seconds:.0f} s of audio -> {out.samples.shape} at {out.rate} Hz")
    say(S, f"  inside the model: {model_s:.2f} s; {stage.model.describe(audio.rate)}")
    say(S, f"  non-model overhead: {process_s - model_s:.3f} s = {share * 100:.3f} % of the stage's wall time "
           f"({'within' if share <= 0.03 else 'ABOVE'} the 3 % target)")
    for line in lines:
        say(S, f"  stage log: {line}")

    # Where the overhead goes: each piece timed alone on the same song (best of 3).
    from restore.models.chunking import choose_chunking
    from restore.models.devices import free_bytes
    chunk_s, items = choose_chunking(free_bytes(device), bwe.COST, audio.channels, bwe.CHUNK_SECONDS)

    def zeros_model(batch: np.ndarray) -> np.ndarray:   # the chunker's own cost: the model does nothing
        n_out = batch.shape[1] * bwe.OUT_RATE // audio.rate
        return np.zeros((batch.shape[0], n_out), np.float32)

    def best(fn) -> float:
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t)
        return min(walls)

    chunker = best(lambda: overlap_add(audio.samples, zeros_model, rate_in=audio.rate, rate_out=bwe.OUT_RATE,
                                       chunk_seconds=chunk_s, overlap_seconds=bwe.OVERLAP_SECONDS, batch_items=items))
    level = best(lambda: level_match_gain(audio, out, 16000.0))
    gain = best(lambda: (out.samples * np.float32(1.0)).astype(np.float32))
    x = np.zeros((items, int(round(chunk_s * audio.rate))), np.float32)
    y = torch.zeros(items, 1, int(round(chunk_s * bwe.OUT_RATE)))
    calls = len(stage.model.calls)
    conv = best(lambda: (torch.from_numpy(np.ascontiguousarray(x)).to("cpu")[:, None, :],
                         y[:, 0, :].float().cpu().numpy())) * calls
    say(S, f"  pieces alone (best of 3): chunker with a do-nothing model {chunker * 1000:.0f} ms; "
           f"level match (band power before and after) {level * 1000:.0f} ms; applying the gain {gain * 1000:.0f} ms; "
           f"numpy<->torch conversion for {calls} calls {conv * 1000:.1f} ms; sum {(chunker + level + gain + conv) * 1000:.0f} ms "
           f"(measured overhead {(process_s - model_s) * 1000:.0f} ms)")
    covered = sum(shape[0] * shape[-1] for shape, _ in stage.model.calls) / audio.rate
    say(S, f"  model work: {covered:.0f} item-seconds of input for {audio.channels} x {seconds:.0f} = "
           f"{audio.channels * seconds:.0f} item-seconds of audio ({covered / (audio.channels * seconds):.2f}x: the 1 s "
           f"overlaps, and the last chunk padded to full length); {model_s / covered:.2f} s of model time per item-second")


# ---------------------------------------------------------------- 3. rtf (child process)

def rtf_child(models: Path, seconds: float, max_minutes: float) -> dict:
    """In a process of its own: load, warm up, predict, time process() on `seconds` of audio
    (or 60 s if `seconds` is predicted to take longer than max_minutes). Returns the figures."""
    S = "rtf"
    inherited = rss_mib()   # before any import: what Linux carried over from the launching process
    sampler = PeakSampler()
    from restore.models.chunking import choose_chunking, plan_chunks
    from tests.support.examples import band
    from restore.models.devices import free_bytes
    from restore.stages import StageContext
    from restore.stages import bwe_hifigan as bwe

    stage, device, load_s, torch = load_stage(models)
    say(S, f"child: device {device.describe()}; torch.get_num_threads() = {torch.get_num_threads()}; "
           f"model loaded in {load_s:.2f} s; peak RSS after load {rss_mib():.0f} MiB")
    per_item_s = warm_up(stage, S)
    rate = 44100

    def item_seconds(song_s: float) -> float:
        """Item-seconds of model input process() runs for a song of song_s seconds."""
        frames = int(round(song_s * rate))
        plan = plan_chunks(frames, rate_in=rate, rate_out=bwe.OUT_RATE, chunk_seconds=bwe.CHUNK_SECONDS,
                           overlap_seconds=bwe.OVERLAP_SECONDS)
        return plan.count * 2 * plan.chunk_in / rate

    predicted = per_item_s * item_seconds(seconds)
    measured_s = seconds
    if predicted > max_minutes * 60:
        measured_s = 60.0
        say(S, f"predicted {predicted / 60:.1f} min for {seconds:.0f} s (from the warm-up's {per_item_s:.2f} s per "
               f"item-second), more than {max_minutes:.0f} min: MEASURING {measured_s:.0f} s INSTEAD AND EXTRAPOLATING")
    else:
        say(S, f"predicted {predicted / 60:.1f} min for {seconds:.0f} s: measuring it")
    audio = band(measured_s, seed=3)
    chunk_s, items = choose_chunking(free_bytes(device), bwe.COST, audio.channels, bwe.CHUNK_SECONDS)
    before = rss_mib()
    sampler.reset()
    t0 = time.perf_counter()
    stage.process(audio, StageContext())
    wall = time.perf_counter() - t0
    peak = rss_mib()
    sampled = sampler.close()
    biggest = max(shape[0] for shape, _ in stage.model.calls)
    res = {
        "threads": torch.get_num_threads(), "asked_s": seconds, "measured_s": audio.duration, "wall": wall,
        "model_s": stage.model.seconds, "calls": stage.model.describe(rate), "predicted_s": predicted,
        "per_item_s_warm": per_item_s, "items_measured": item_seconds(measured_s), "items_asked": item_seconds(seconds),
        "items_240": item_seconds(240.0), "rss_before_mib": before, "rss_peak_mib": peak,
        "rss_inherited_mib": inherited, "rss_sampled_peak_mib": sampled,
        "chunk_s": chunk_s, "batch_items": items, "biggest_call_items": biggest,
        "cost_bytes_per_item_second": bwe.COST.bytes_per_item_second, "cost_fixed_bytes": bwe.COST.fixed_bytes,
    }
    print("RESULT " + json.dumps(res), flush=True)
    return res


def bench_rtf(models: Path, seconds: float, max_minutes: float) -> None:
    S = "rtf"
    res = run_child("rtf", models, "--seconds", str(seconds), "--max-minutes", str(max_minutes))
    if res is None:
        say(S, "  ! no result")
        return
    m, wall = res["measured_s"], res["wall"]
    say(S, f"{m:.0f} s stereo 44.1 kHz through HifiganBweStage.process on the CPU ({res['threads']} torch threads): "
           f"wall {wall:.1f} s, of which {res['model_s']:.1f} s in the model")
    say(S, f"  {res['calls']}")
    say(S, f"  RTF {wall / m:.2f} (processing time / audio duration; >1 is slower than real time) = "
           f"{m / wall:.3f}x real time")
    if res["asked_s"] != m:
        scale = res["items_asked"] / res["items_measured"]
        est = wall * scale
        say(S, f"  EXTRAPOLATED to {res['asked_s']:.0f} s (not measured): {res['items_asked']:.0f} item-seconds of model "
               f"input against {res['items_measured']:.0f} measured (whole 12 s chunks) -> about {est:.0f} s = "
               f"{est / 60:.1f} min, RTF {est / res['asked_s']:.2f}; plain proportion to duration would give "
               f"{wall * res['asked_s'] / m:.0f} s")
    per_item = res["model_s"] / res["items_measured"]
    four = wall * res["items_240"] / res["items_measured"]
    say(S, f"  a 4-minute stereo song: {res['items_240']:.0f} item-seconds of model input -> about {four / 60:.1f} min here "
           f"({per_item:.2f} s of model time per item-second)")
    delta = res["rss_peak_mib"] - res["rss_before_mib"]
    chunk_s, items, biggest = res["chunk_s"], res["batch_items"], res["biggest_call_items"]
    measured_per_is = delta / (biggest * chunk_s) if biggest else 0
    cost_per_is = res["cost_bytes_per_item_second"] / MiB
    say(S, f"  peak RSS (ru_maxrss of the child, RUSAGE_SELF): {res['rss_peak_mib']:.0f} MiB; "
           f"{res['rss_before_mib']:.0f} MiB before process() (after load and warm-up), so +{delta:.0f} MiB during it; "
           f"psutil sampled every 20 ms during process(): {res['rss_sampled_peak_mib']:.0f} MiB; ru_maxrss at the "
           f"child's start (carried over from the launcher): {res['rss_inherited_mib']:.0f} MiB")
    say(S, f"  memory plan: the stage chose {chunk_s:.0f} s chunks, up to {items} items per call from the free RAM; the "
           f"largest call had {biggest} items -> {measured_per_is:.0f} MiB per item-second measured, against "
           f"COST.bytes_per_item_second = {cost_per_is:.0f} MiB in restore/stages/bwe_hifigan.py "
           f"(the plan expects {(res['cost_fixed_bytes'] + biggest * chunk_s * res['cost_bytes_per_item_second']) / MiB:.0f} MiB "
           f"for that call)")
    if res["asked_s"] != m and items > biggest:
        say(S, f"  at {res['asked_s']:.0f} s the calls would hold up to {items} items: about "
               f"{res['rss_before_mib'] + items * chunk_s * measured_per_is:.0f} MiB peak by the same rate (estimate)")


# ---------------------------------------------------------------- main

def machine() -> None:
    print(machine_line(), flush=True)
    import importlib.metadata
    import numpy
    print(f"[machine] numpy {numpy.__version__}, torch {importlib.metadata.version('torch')} (the parts that run the "
          f"model print torch.get_num_threads())", flush=True)




class PeakSampler:
    """psutil's RSS of this process every 20 ms in a thread (torch releases the GIL while it
    computes): a cross-check of ru_maxrss that cannot inherit anything from the parent."""

    def __init__(self):
        import threading
        import psutil
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.02)

    def reset(self) -> None:
        self.peak = self.proc.memory_info().rss

    def close(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.peak / MiB


def child(argv: list[str]) -> int:
    """The parts that run the model, each in a fresh python process so that its memory figures
    are its own: the launching process stays small (it never imports torch), because Linux
    carries a parent's peak RSS over into a child's ru_maxrss across fork+exec."""
    c = argparse.ArgumentParser()
    c.add_argument("part", choices=("model", "overhead", "rtf"))
    c.add_argument("--models", type=Path, required=True)
    c.add_argument("--seconds", type=float, default=60.0)
    c.add_argument("--max-minutes", type=float, default=8.0)
    ca = c.parse_args(argv)
    if ca.part == "model":
        make_model(ca.models)
    elif ca.part == "overhead":
        bench_overhead(ca.models, ca.seconds)
    else:
        rtf_child(ca.models, ca.seconds, ca.max_minutes)
    return 0


def run_child(part: str, models: Path, *extra: str) -> dict | None:
    """Run `part` in a fresh process, pass its lines through, return its RESULT (if any)."""
    args = [sys.executable, str(Path(__file__).resolve()), "_child", part, "--models", str(models), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    res = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
        else:
            print(line, end="", flush=True)
    proc.wait()
    if proc.returncode != 0:
        say(part, f"  ! child process failed (exit code {proc.returncode})")
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, ("loads", "overhead", "rtf"))
    p.add_argument("--loads-songs", type=int, default=3)
    p.add_argument("--loads-seconds", type=float, default=10.0)
    p.add_argument("--overhead-seconds", type=float, default=60.0)
    p.add_argument("--rtf-seconds", type=float, default=180.0)
    p.add_argument("--max-minutes", type=float, default=8.0,
                   help="if the rtf song is predicted to take longer, measure 60 s and extrapolate (default 8)")
    a = p.parse_args(argv)
    parts = a.only or ["loads", "overhead", "rtf"]

    machine()
    with work_folder("mp3restore-bench-hifigan-", a.work, a.keep) as work:
        models = work / "models"
        run_child("model", models)
        run_parts([("loads", lambda: bench_loads(work, models, a.loads_songs, a.loads_seconds)),
                   ("overhead", lambda: run_child("overhead", models, "--seconds", str(a.overhead_seconds))),
                   ("rtf", lambda: bench_rtf(models, a.rtf_seconds, a.max_minutes))], parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
