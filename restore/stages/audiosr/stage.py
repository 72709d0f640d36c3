"""AudioSR latent-diffusion bandwidth extension (variants 02, 03, 10): 48 kHz out, true
stereo, exact length, deterministic for a seed.

In-process, loaded once per run: audiosr 0.0.7's own LatentDiffusion and DDIM sampler
(imported through restore/stages/audiosr/compat.py), built from audiosr's own config and loaded
from the published checkpoint (haoheliu/audiosr_basic, pytorch_model.bin) in the models
folder or the Hugging Face cache. audiosr's build_model always downloads; we do not use it.

What AudioSR 0.0.7 does to a file, and what we do instead:
- it reads only the first channel: each channel here is one item, left and right batched;
- it removes DC and peak-normalises each file to 0.5: the DC of each channel is removed
  here too and, as there, not put back; then one gain for the whole song (both channels)
  brings the low-passed song's peak to 0.5 and is undone afterwards, so chunks and
  channels keep their relative levels;
- it pads to 5.12 s multiples and returns the padding: chunks of 5.12 s (its recommended
  length) with 0.64 s raised-cosine crossfades through the one chunker; exact length; a
  song shorter than one chunk is padded with silence to the full chunk and trimmed back;
- it runs in float32: here the UNet runs under float16 autocast on CUDA (`half`), and
  every item's output is checked (`suspect`): one that is not finite or absurdly loud is
  redone in float32 and the log says so;
- it low-passes its input at a cutoff it detects (98.5 % of the STFT energy below) with a
  filter type drawn at random: here the cutoff is detected the same way once per song and
  the filter is the one its RNG draws for the seed;
- it replaces the band below the cutoff with the input's (librosa STFT) and peak-normalises
  the output: here the band below the cutoff comes from the input through a linear-phase
  crossover, per channel, on the final 48 kHz signal, then one gain matches the level
  below the cutoff to the input's (the log gives it);
- its noise comes from the global RNG over the whole batch: here each item draws its noise
  from its own generator, seeded by the seed and the item's samples, so the output does
  not depend on batching, out-of-memory retries or the device.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math

import numpy as np

from restore.audio import Audio, fit_frames, frames_at_rate
from restore.analysis.spectrum import level_match_gain
from restore.models.chunking import ModelCost, OomPolicy, choose_chunking, overlap_add, plan_chunks
from restore.errors import RestoreError
from restore.models.checkpoints import is_trusted, model_file_problem
from restore.models.store import CATALOGUE, find_model, missing, model_version, require_model
from restore.stages.base import ModelStage, StageContext, package_version
from restore.stages.options import Option, half_precision
from restore.stages.lowpass import FILTER_TYPES, ORDER, lowpass

OUT_RATE = 48000
HOP = 480                      # mel hop at 48 kHz: 100 frames per second
N_FFT = 2048
N_MELS = 256
GRID_S = 0.64                  # latent frames are 8 mel frames and the UNet halves them 3 times
CHUNK_SECONDS = 5.12           # AudioSR's recommended length; bench/bench_audiosr.py measures the choice
OVERLAP_SECONDS = 0.64
UNCOND_LATENT = -11.4981       # VAEFeatureExtract's unconditional condition (a constant latent)
TARGET_PEAK = 0.5              # AudioSR's normalize_wav
# Device memory: weights in use (UNet 258 M, the decoder VAE + vocoder, the encoder VAE) in
# float32, and activations per item-second. The activation figure is an estimate, not
# measured on a GPU (the guided step's one UNet pass holds two items' activations per
# item); the out-of-memory policy covers it being too low.
COST = ModelCost(fixed_bytes=3_200 << 20, bytes_per_item_second=400 << 20)
MAX_MATCH_DB = 12.0
# The chunk guard, in the scaled domain (the song's low-passed peak at TARGET_PEAK): an
# output more than 12 dB above its own input, and above half the song's peak, is no
# bandwidth extension. AudioSR's vocoder ends in tanh, so a UNet that overflowed in half
# precision shows as NaN/inf or as a saturated, full-scale output.
ABSURD_RATIO = 4.0
ABSURD_LEVEL = 0.25


def _on_grid(chunk: float) -> float:
    if abs(chunk / GRID_S - round(chunk / GRID_S)) > 1e-6:
        raise ValueError(f"must be a multiple of {GRID_S} s (the latent grid)")
    return round(chunk / GRID_S) * GRID_S


def _whole_schedule(steps: int) -> int:
    stride = 1000 // steps   # audiosr's uniform DDIM schedule: range(0, 1000, stride) + 1 must stay below 1000
    if (999 // stride) * stride + 1 >= 1000:
        raise ValueError(f"{steps} steps make audiosr's DDIM schedule step past its 1000 timesteps; "
                         "take a nearby count, e.g. 25, 50, 100 or 200")
    return steps


OPTIONS = (
    Option("ddim_steps", "int", 50, "DDIM sampling steps (time grows with them)", 1, 1000, check=_whole_schedule),
    Option("guidance_scale", "float", 3.5, "classifier-free guidance", 0.0, 20.0),
    Option("seed", "int", 42, "the noise seed: the same seed gives the same output", 0, 2**31 - 1),
    Option("chunk_seconds", "float", CHUNK_SECONDS, "chunk length, a multiple of 0.64 s (5.12: what it was trained on)",
           1.28, 20.48, check=_on_grid),
    Option("half", "text", "auto", "half precision (auto: on CUDA)", values="auto, on or off", check=half_precision),
    Option("sampler", "choice", "ddim", "ddim: audiosr's own (ddim_steps); dpmpp: DPM-Solver++(2M), fewer steps "
           "(dpmpp_steps), quality unjudged", choices=("ddim", "dpmpp")),
    Option("dpmpp_steps", "int", 25, "DPM-Solver++ steps, one guided UNet call each (sampler=dpmpp only)", 2, 200),
    Option("chunks_per_call", "int", None, "neighbouring chunks per model call, both channels each "
           "(auto: as many as fit in free GPU memory; 1 on the CPU)", 1, 16, auto=True),
)


def audiosr_cutoff_hz(x48: np.ndarray, percentile: float = 0.985) -> float:
    """AudioSR's cutoff detection (utils._locate_cutoff_freq) over the whole song: the
    highest frequency below which `percentile` of the STFT magnitude lies, from up to 600
    windows of 2048 at 48 kHz, all channels; 24 kHz (nothing to cut) for near silence."""
    frames = x48.shape[-1]
    if frames < N_FFT:
        return OUT_RATE / 2
    starts = np.unique(np.linspace(0, frames - N_FFT, num=min(600, frames // (N_FFT // 2) or 1), dtype=np.int64))
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    mag = np.zeros(N_FFT // 2 + 1)
    for batch in np.array_split(starts, max(1, len(starts) // 64)):
        seg = np.stack([x48[:, s:s + N_FFT] for s in batch])          # [w, C, n]
        mag += np.abs(np.fft.rfft(seg * window, axis=-1)).sum(axis=(0, 1))
    energy = np.cumsum(mag)
    if energy[-1] <= 0:
        return OUT_RATE / 2
    threshold = energy[-1] * percentile
    index = 0
    for i in range(1, len(energy)):
        if energy[-i] < threshold:
            index = len(energy) - i
            break
    cutoff = index / 1024 * 24000
    return OUT_RATE / 2 if cutoff < 1000 else cutoff


def suspect(x: np.ndarray, y: np.ndarray) -> list[str | None]:
    """Why each item of the model's output y cannot be right, or None: float32 [B, n] input
    and output, both in the scaled domain. Not finite; or a peak, or an RMS level, more
    than ABSURD_RATIO times the item's input's and above ABSURD_LEVEL (for near-silent
    items the ratio alone would flag anything)."""
    why: list[str | None] = []
    for xi, yi in zip(x.astype(np.float64), y.astype(np.float64)):
        if not np.isfinite(yi).all():
            why.append("output not finite")
            continue
        peak_in, peak_out = float(np.max(np.abs(xi), initial=0.0)), float(np.max(np.abs(yi), initial=0.0))
        rms_in, rms_out = float(np.sqrt(np.mean(xi * xi))), float(np.sqrt(np.mean(yi * yi)))
        if peak_out > max(ABSURD_RATIO * peak_in, ABSURD_LEVEL):
            why.append(f"output peak {peak_out:.3g} against an input peak of {peak_in:.3g}")
        elif rms_out > max(ABSURD_RATIO * rms_in, ABSURD_LEVEL):
            why.append(f"output RMS {rms_out:.3g} against an input RMS of {rms_in:.3g}")
        else:
            why.append(None)
    return why


def keep_band_below(source: np.ndarray, generated: np.ndarray, cutoff_hz: float, rate: int = OUT_RATE,
                    taps: int = 4095) -> np.ndarray:
    """float32 [C, T] x2 -> generated above cutoff_hz, source below: generated + L(source -
    generated), L a linear-phase (zero-delay) Kaiser-windowed sinc low-pass, transition
    about 100 Hz wide centred on the cutoff."""
    from scipy.signal import oaconvolve
    if cutoff_hz >= rate / 2:
        return source.astype(np.float32)
    n = np.arange(taps) - taps // 2
    h = 2 * cutoff_hz / rate * np.sinc(2 * cutoff_hz / rate * n) * np.kaiser(taps, 10.0)
    h = (h / h.sum()).astype(np.float32)                               # unity gain at DC
    diff = (source - generated).astype(np.float32)
    low = oaconvolve(diff, h[None, :], mode="same", axes=-1)
    return (generated + low).astype(np.float32)


def mel_basis(rate: int = OUT_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 20.0,
              fmax: float = 24000.0) -> np.ndarray:
    """librosa.filters.mel (Slaney mel scale, Slaney area normalisation) as AudioSR calls it:
    float32 [n_mels, n_fft // 2 + 1]."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def item_seed(seed: int, item: np.ndarray) -> int:
    """A 63-bit seed from the stage seed and the item's samples: the same chunk gives the
    same noise whatever batch it is in."""
    h = hashlib.blake2b(np.ascontiguousarray(item, dtype=np.float32).tobytes(), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), "little") >> 1


class GuidedModel:
    """The LatentDiffusion as audiosr's DDIM sampler sees it, with classifier-free guidance
    in one UNet pass over 2B items (conditional and unconditional side by side) where
    audiosr's p_sample_ddim makes two passes over B: the UNet treats items independently,
    so each item's arithmetic is the same (float rounding aside) in one bigger call. The
    sampler is then run with guidance 1.0, which makes it call apply_model once per step.
    Everything else is the model's own (attribute look-ups pass through)."""

    def __init__(self, model, uncond: dict, scale: float):
        self.__dict__.update(model=model, uncond=uncond, scale=scale)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["model"], name)

    def apply_model(self, x, t, cond: dict):
        import torch
        both = self.model.apply_model(torch.cat([x, x]), torch.cat([t, t]),
                                      {k: torch.cat([v, self.uncond[k]]) for k, v in cond.items()})
        c, u = both.chunk(2)
        return u + self.scale * (c - u)      # p_sample_ddim's own guidance formula


class AudioSrEngine:
    """One loaded LatentDiffusion on one device, and the generation of a batch of items."""

    def __init__(self, model, device: str, half: bool):
        import torch
        self.model, self.device, self.half = model, torch.device(device), half
        self.batched_guidance = True   # GuidedModel; False: audiosr's two UNet passes per step
        self.model.device = self.device          # DDPM/DDIM read model.device for their buffers
        self.mel_basis = torch.from_numpy(mel_basis()).to(self.device)
        self.window = torch.hann_window(N_FFT).to(self.device)

    def log_mel(self, x):
        """audiosr.utils.mel_spectrogram_train for a batch: x [B, L] at 48 kHz -> [B, L / 480, 256]."""
        import torch
        pad = (N_FFT - HOP) // 2
        x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window, center=False,
                          normalized=False, onesided=True, return_complex=True).abs()
        mel = torch.log(torch.clamp(self.mel_basis @ spec, min=1e-5))
        return mel.transpose(1, 2)

    def generate(self, items: np.ndarray, steps: int, guidance: float, seed: int, on_step=None,
                 half: bool | None = None, sampler: str = "ddim") -> np.ndarray:
        """items: float32 [B, n] at 48 kHz, low-passed and scaled -> float32 [B, n] at 48 kHz.
        `half` (None: the engine's own setting) runs the UNet under float16 autocast, on
        CUDA only; the VAEs and the vocoder always run in float32. Each guided step is one
        UNet pass over 2B items (GuidedModel) unless `batched_guidance` is off (DDIM only).
        `sampler`: "ddim" (audiosr's, eta 1: noise at every step, from each item's own
        generator) or "dpmpp" (restore/stages/audiosr/dpmpp.py: deterministic from the
        start noise). Items are zero-padded to a multiple of the 0.64 s latent grid and
        trimmed back."""
        import contextlib

        import torch

        from restore.stages.audiosr.compat import load_audiosr
        lib = load_audiosr()
        ddim = lib["ddim_module"]
        b, n = items.shape
        grid = int(round(GRID_S * OUT_RATE))
        length = -(-n // grid) * grid
        gens = [torch.Generator().manual_seed(item_seed(seed, item)) for item in items]

        def noise(shape):
            return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in gens]).to(self.device)

        m = self.model
        with torch.inference_mode():
            x = torch.zeros(b, length, device=self.device)
            x[:, :n] = torch.from_numpy(items).to(self.device)
            mel = self.log_mel(x)                                              # [B, T, 256]
            cond_vae = m.cond_stage_models[m.cond_stage_model_metadata["concat_lowpass_cond"]["model_idx"]].vae
            posterior = cond_vae.encode(mel[:, None])
            c = posterior.mean + posterior.std * noise(posterior.mean.shape)   # DiagonalGaussian.sample, own noise
            uncond = torch.full_like(c, UNCOND_LATENT)
            guide = {"unconditional_guidance_scale": guidance,
                     "unconditional_conditioning": {"concat_lowpass_cond": uncond}}
            sampled = m
            if (self.batched_guidance or sampler == "dpmpp") and guidance != 1.0:   # at 1.0: the conditional pass only
                sampled = GuidedModel(m, guide["unconditional_conditioning"], guidance)
                guide = {"unconditional_guidance_scale": 1.0, "unconditional_conditioning": None}
            half = self.half if half is None else half
            autocast = (torch.autocast("cuda", dtype=torch.float16) if half and self.device.type == "cuda"
                        else contextlib.nullcontext())
            original = ddim.noise_like
            ddim.noise_like = lambda shape, device, repeat=False: noise(shape)
            try:
                callback = (lambda i: on_step(i + 1)) if on_step else None
                with autocast:
                    if sampler == "dpmpp":
                        from restore.stages.audiosr import dpmpp
                        samples = dpmpp.sample(sampled, steps, noise(c.shape), {"concat_lowpass_cond": c}, callback)
                    else:
                        samples, _ = lib["DDIMSampler"](sampled, device=self.device).sample(
                            steps, b, tuple(c.shape[1:]), {"concat_lowpass_cond": c}, verbose=False, eta=1.0,
                            x_T=noise(c.shape), **guide, callback=callback)
            finally:
                ddim.noise_like = original
            out_mel = m.decode_first_stage(samples.float())
            out_mel = m.mel_replace_ops(out_mel, mel)                          # its own low-band mel keep
            wave = m.first_stage_model.vocoder(out_mel.squeeze(1).permute(0, 2, 1))
        return wave[:, 0, :n].float().cpu().numpy()


def _numbers(value) -> bool:
    """A number, None, or a (nested) list of numbers."""
    if isinstance(value, list):
        return all(_numbers(v) for v in value)
    return value is None or isinstance(value, (int, float))   # bool is an int


def sizes_only(config, own, name: str, path, at: str = "") -> None:
    """Raise ModelRefused unless `config` (from a checkpoint) is `own` (audiosr's config)
    with at most numbers changed: the same strings in the same places and no key `own`
    lacks (keys it leaves out are fine)."""
    from restore.models.checkpoints import refusal

    def bad(why: str):
        return refusal(path, "the AudioSR checkpoint", f"its {name} {why} at {at or '/'} "
                       "(a checkpoint's config may change sizes only)", "audiosr-basic")

    if isinstance(own, dict):
        if not isinstance(config, dict):
            raise bad("is not a mapping")
        for key, value in config.items():
            if key not in own:
                raise bad(f"adds {str(key)[:40]!r}")
            sizes_only(value, own[key], name, path, f"{at}/{key}")
    elif _numbers(own) and own != []:
        if not _numbers(config):
            raise bad("puts something other than numbers")
    elif config != own:   # strings (a class to import, a file to read, a name): exactly audiosr's own
        raise bad("changes a value that is not a number")


def load_engine(path, device: str, half: bool, log=lambda line: None, *, spec=None, trusted: bool = False) -> AudioSrEngine:
    """Build audiosr's LatentDiffusion from its own config (or the config a test checkpoint
    carries) and load the checkpoint's weights into it. Parts super-resolution never runs
    (the conditioner VAE's decoder and vocoder, the first-stage encoder) are dropped.

    The checkpoint is checked against the catalogue (`spec`, default audiosr-basic) first,
    then read as tensors only (restore/models/checkpoints.py): the published file's pickle
    holds nothing else. A file that differs from the published or recorded hash, or that
    names anything beyond tensors, is refused (ModelRefused) unless `trusted`
    (--trust-model-file); then `log` says so."""
    import warnings

    from restore.models.checkpoints import load_tensors, verified_or_refused
    from restore.stages.audiosr.compat import build_latent_diffusion, load_audiosr
    spec = spec or CATALOGUE["audiosr-basic"]
    what = f"the AudioSR checkpoint ({spec.name})"
    check = verified_or_refused(spec, path, what, trusted)
    if trusted and check.status != "published":
        log(f"warning: bwe_audiosr: loading {path} because --trust-model-file names it ({check.detail})")
    lib = load_audiosr()
    ckpt = load_tensors(path, what=what, fetch_name=spec.name, check=check, published_sha256=spec.sha256, trusted=trusted)
    if not isinstance(ckpt, dict):
        raise RestoreError(f"{what} {path} is not a state dict (a {type(ckpt).__name__})",
                           hint=f"`mp3restore models fetch {spec.name}` gets the published one")
    state = ckpt.get("state_dict", ckpt)
    own = lib["basic_config"]()["model"]["params"]
    params = ckpt.get("mp3restore_config") or own
    vocoder = ckpt.get("mp3restore_vocoder")
    # A test checkpoint carries a smaller config. audiosr builds every part from a config's
    # "target" strings (import and call) and reads a "ckpt_path" with torch.load, so a
    # config that came in a file may only change numbers: every string, every key, must
    # be audiosr's own.
    sizes_only(params, own, "mp3restore_config", path)
    if vocoder is not None:
        sizes_only(vocoder, lib["utilities_model"].get_vocoder_config_48k(), "mp3restore_vocoder", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # torch.nn.utils.weight_norm in audiosr's HiFi-GAN
        model = build_latent_diffusion(params, vocoder=vocoder)
    result = model.load_state_dict(state, strict=False)
    needed = ("model.", "first_stage_model.decoder.", "first_stage_model.post_quant_conv.",
              "first_stage_model.vocoder.", "cond_stage_models.0.vae.encoder.", "cond_stage_models.0.vae.quant_conv.",
              "scale_factor")
    lost = [k for k in result.missing_keys if k.startswith(needed)]
    if lost:
        raise RuntimeError(f"the AudioSR checkpoint {path} lacks {len(lost)} weights the model needs "
                           f"(e.g. {lost[0]}): not an audiosr_basic checkpoint?")
    other = [k for k in result.unexpected_keys if not k.startswith(("clap.", "model_ema."))]
    if other:
        log(f"bwe_audiosr: {len(other)} checkpoint entries not used (e.g. {other[0]})")
    del ckpt, state
    unused = lib["UnusedModel"]
    cond_vae = model.cond_stage_models[0].vae
    cond_vae.decoder = cond_vae.vocoder = cond_vae.post_quant_conv = unused()
    model.first_stage_model.encoder = model.first_stage_model.quant_conv = unused()
    model = model.to(device).eval()
    return AudioSrEngine(model, device, half)


class AudioSrStage(ModelStage):
    """AudioSR bandwidth extension to 48 kHz (02, 03, 10)."""

    name = "bwe_audiosr"
    libraries = ("torch", "audiosr", "scipy", "soxr", "numpy")
    revision = 2   # 2: DC removed before the gain, a short song padded to one full chunk, the chunk guard
    spec = CATALOGUE["audiosr-basic"]
    facts_key = "bwe_audiosr_model_file"
    options = OPTIONS

    def __init__(self, env=None):
        super().__init__(env)
        self.engine: AudioSrEngine | None = None
        self.cpu_engine: AudioSrEngine | None = None
        self.device = None

    # -- what the plan asks (cheap: no torch import, no model load) --
    def unavailable(self) -> str | None:
        if package_version("torch") == "absent":
            return 'torch is not installed (pip install -e ".[neural]", see README)'
        if importlib.util.find_spec("audiosr") is None:
            return "audiosr is not installed (pip install --no-deps audiosr==0.0.7, see README)"
        lacking = [m for m in ("einops", "tqdm", "scipy", "PIL", "requests") if importlib.util.find_spec(m) is None]
        if lacking:
            return f"AudioSR needs {', '.join(lacking)} (pip install -e \".[audiosr]\", see README)"
        path = find_model(self.spec, self.models_dir)
        if path is None:
            return missing(self.spec, self.models_dir).reason()
        return model_file_problem(self.spec, path, "the AudioSR checkpoint", self.trusted)

    def versions(self) -> dict:
        model = model_version(self.spec, self.models_dir)
        return {"bwe_audiosr": self.revision, "model": model}

    def config(self) -> dict:
        o = self.opts
        sampling = ({"ddim_steps": o["ddim_steps"], "ddim_eta": 1.0} if o["sampler"] == "ddim"
                    else {"sampler": "dpmpp-2m", "dpmpp_steps": o["dpmpp_steps"]})
        # chunks_per_call is left out: an item's output does not depend on its batch (its
        # noise is its own), so a different batching is the same output.
        return {"out_rate": OUT_RATE, **sampling, "guidance_scale": o["guidance_scale"],
                "seed": o["seed"], "chunk_s": o["chunk_seconds"], "overlap_s": OVERLAP_SECONDS,
                "half": o["half"], "input_peak": TARGET_PEAK, "low_band": "input-below-detected-cutoff",
                "level": "match-below-cutoff"}

    def steps(self) -> int:
        """Model steps per item: ddim_steps or dpmpp_steps, as `sampler` says."""
        return self.opts["ddim_steps"] if self.opts["sampler"] == "ddim" else self.opts["dpmpp_steps"]

    def memory_bytes(self) -> int:
        chunks = self.opts["chunks_per_call"] or 1
        return COST.fixed_bytes + int(2 * chunks * self.opts["chunk_seconds"] * COST.bytes_per_item_second)

    # -- heavy --
    def _half(self, device) -> bool:
        h = self.opts["half"]
        return device.kind == "cuda" if h == "auto" else bool(h) and device.kind == "cuda"

    def load(self, device) -> None:
        self.device = device
        self.load_notes = []
        self.engine = self._load_engine(device.torch_device, self._half(device))

    def _load_engine(self, torch_device: str, half: bool) -> AudioSrEngine:
        path = require_model(self.spec, self.models_dir)
        return load_engine(path, torch_device, half, self.load_notes.append, spec=self.spec,
                           trusted=is_trusted(path, self.trusted))

    def unload(self) -> None:
        self.engine = self.cpu_engine = None

    def _cpu_fallback(self) -> AudioSrEngine:
        if self.cpu_engine is None:  # loaded only if a single chunk does not fit on the GPU
            self.cpu_engine = self._load_engine("cpu", False)
        return self.cpu_engine

    def _guarded(self, engine: AudioSrEngine, items: np.ndarray, where, ctx: StageContext, counts: dict,
                 on_step=None) -> np.ndarray:
        """engine.generate on scaled items [B, n], every item checked (see `suspect`). An
        item that fails in half precision is redone alone in float32 (its noise is its own,
        so it comes out as an all-float32 run would); one that is not finite in float32
        raises RestoreError; one that is only loud in float32 is kept, with a warning.
        where(i): the item's place in the song, for the log."""
        o = self.opts
        args = (self.steps(), o["guidance_scale"], o["seed"])
        y = engine.generate(items, *args, on_step, sampler=o["sampler"])
        why = suspect(items, y)
        bad = [i for i, w in enumerate(why) if w]
        if bad and engine.half:
            redo = engine.generate(np.ascontiguousarray(items[bad]), *args, half=False, sampler=o["sampler"])
            for i in bad:
                ctx.log(f"warning: bwe_audiosr: {where(i)}: {why[i]} in half precision; redone in float32")
            y[bad] = redo
            counts["fp32_redone"] += len(bad)
            for i, w in zip(bad, suspect(items[bad], redo)):
                why[i] = w and f"{w} in float32"
        for i in bad:
            if why[i] is None:
                continue
            if "not finite" in why[i]:
                raise RestoreError(f"AudioSR's {why[i]} ({where(i)})",
                                   hint="the model file may be damaged: `mp3restore models verify`")
            counts["suspect"] += 1
            ctx.log(f"warning: bwe_audiosr: {where(i)}: {why[i]}; kept as the model made it")
        return y

    def _batching(self, channels: int, free: int) -> tuple[float, int]:
        """(chunk seconds, items per call) for a song of `channels` channels with `free`
        bytes free on the device. Items are whole chunks (all channels of a chunk go
        together, and neighbouring chunks after them): chunks_per_call, or on `auto` as
        many as the memory estimate (COST) fits in free GPU memory, at most 16 items, and
        one chunk on the CPU (compute-bound: both channels in one call cost 1.63 single
        calls there, more items were not measured; bench/RESULTS.md). A number asked for is capped at what fits (psutil's free RAM on
        the CPU); the out-of-memory policy covers the estimate being wrong."""
        o = self.opts
        chunk_s = o["chunk_seconds"]
        _, fit = choose_chunking(free, COST, channels, chunk_s, min_seconds=chunk_s, max_items=16)
        fit_chunks = max(1, fit // channels)
        if o["chunks_per_call"] is None:
            chunks = 1 if self.device.kind == "cpu" else fit_chunks
        else:
            chunks = min(o["chunks_per_call"], fit_chunks)
        return chunk_s, chunks * channels

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, round(T * 48000 / rate)] at 48 kHz, without the input's DC offset."""
        import soxr

        from restore.models.devices import free_bytes, is_out_of_memory, release_device_memory
        o = self.opts
        self.report_load_notes(ctx)
        frames_out = frames_at_rate(audio.frames, audio.rate, OUT_RATE)
        # AudioSR's normalize_wav removes the mean before its peak gain and never puts it
        # back (its output's low band is the DC-free input's): a DC offset would otherwise
        # lift the lowest conditioning mel bins and steal headroom from the gain. Removed
        # before the resampler, which would turn the offset's edges into ringing.
        dc = audio.samples.astype(np.float64).mean(axis=1, keepdims=True) if audio.frames else np.zeros((audio.channels, 1))
        x = (audio.samples - dc).astype(np.float32)
        x48 = x if audio.rate == OUT_RATE else soxr.resample(x.T, audio.rate, OUT_RATE, "VHQ").T
        x48 = np.ascontiguousarray(fit_frames(x48, frames_out), dtype=np.float32)
        ctx.facts["audiosr_dc_removed"] = [round(float(d), 6) for d in dc[:, 0]]
        cutoff = audiosr_cutoff_hz(x48)
        ftype = str(np.random.RandomState(o["seed"]).choice(FILTER_TYPES))  # the type audiosr draws for this seed
        low = lowpass(x48, cutoff, OUT_RATE, ftype=ftype, order=ORDER) if cutoff < OUT_RATE / 2 else x48
        peak = float(np.max(np.abs(low))) if low.size else 0.0
        gain = TARGET_PEAK / peak if peak > 1e-6 else 1.0
        ctx.facts["audiosr_cutoff_hz"] = round(cutoff)
        if np.max(np.abs(dc)) >= 1e-4:
            ctx.log(f"bwe_audiosr: removed a DC offset of {', '.join(f'{d:+.4f}' for d in dc[:, 0])} "
                    "(as AudioSR's own normalisation does; not put back)")
        ctx.log(f"bwe_audiosr: input cut at {cutoff:.0f} Hz (AudioSR's detection; {ftype} order {ORDER}), "
                f"scaled by {20 * np.log10(gain):+.1f} dB to peak {TARGET_PEAK}; {self.steps()} "
                f"{'DDIM' if o['sampler'] == 'ddim' else 'DPM-Solver++(2M)'} steps, "
                f"guidance {o['guidance_scale']}, seed {o['seed']}, "
                f"{'UNet in float16 (autocast)' if self.engine.half else 'float32'}")

        chunk_s, items = self._batching(audio.channels, free_bytes(self.device))
        plan = plan_chunks(frames_out, rate_in=OUT_RATE, rate_out=OUT_RATE, chunk_seconds=chunk_s,
                           overlap_seconds=OVERLAP_SECONDS)
        # A song shorter than one chunk is one item of its own length (the chunker's rule):
        # padded here to the full chunk, the length every other item has (5.12 s by default,
        # what the model was trained on), and trimmed back.
        full = int(round(chunk_s * OUT_RATE))
        if 0 < plan.chunk_in < full:
            ctx.log(f"bwe_audiosr: the song ({plan.chunk_in / OUT_RATE:.2f} s) is shorter than one chunk: "
                    f"padded with silence to {chunk_s:.2f} s and trimmed back")
        calls = max(1, -(-plan.count * audio.channels // items))
        done = {"calls": 0, "items": 0}
        counts = {"fp32_redone": 0, "suspect": 0}

        def run(engine: AudioSrEngine, batch: np.ndarray, on_step=None) -> np.ndarray:
            n = batch.shape[1]
            scaled = np.zeros((len(batch), max(n, full)), np.float32)
            scaled[:, :n] = batch * np.float32(gain)
            first = done["items"]

            def where(i: int) -> str:
                k, c = divmod(first + i, audio.channels)
                return f"chunk {k + 1} of {plan.count}, channel {c + 1}"

            y = self._guarded(engine, scaled, where, ctx, counts, on_step)
            done["items"] += len(batch)   # the chunker runs items in order, also when it splits a batch
            return y[:, :n] / np.float32(gain)

        def call(batch: np.ndarray) -> np.ndarray:
            on_step = lambda i: ctx.progress(min(1.0, (done["calls"] + i / self.steps()) / calls))  # noqa: E731
            y = run(self.engine, batch, on_step)
            done["calls"] += 1
            return y

        oom = OomPolicy(is_oom=is_out_of_memory, free=lambda: release_device_memory(self.device),
                        fallback=(lambda b: run(self._cpu_fallback(), b)) if self.device.kind != "cpu" else None)
        stats: dict = {}
        y = overlap_add(low, call, rate_in=OUT_RATE, rate_out=OUT_RATE, chunk_seconds=chunk_s,
                        overlap_seconds=OVERLAP_SECONDS, batch_items=items, oom=oom,
                        log=ctx.log, progress=lambda f: None, stats=stats)
        ctx.facts["audiosr_fp32_redone"] = counts["fp32_redone"]
        if counts["suspect"]:
            ctx.facts["audiosr_suspect_chunks"] = counts["suspect"]
        y = keep_band_below(x48, y, cutoff)
        out = Audio(y, OUT_RATE)
        top = min(cutoff, 16000.0)
        match = level_match_gain(Audio(x48, OUT_RATE), out, top)
        change_db = 20 * np.log10(match)
        ctx.facts["audiosr_chunks"] = stats.get("chunks", 0)
        if abs(change_db) > MAX_MATCH_DB:
            ctx.log(f"warning: bwe_audiosr: the level below {top:.0f} Hz is {-change_db:+.1f} dB off the input; "
                    "left as it came out")
            return out
        redone = f"; {counts['fp32_redone']} redone in float32" if counts["fp32_redone"] else ""
        ctx.log(f"bwe_audiosr: {stats.get('chunks', 0)} chunks of {chunk_s:.2f} s in {stats.get('calls', 0)} calls "
                f"of up to {items} items"
                f"{redone}, level matched below {top:.0f} Hz with {change_db:+.2f} dB")
        return Audio((y * np.float32(match)).astype(np.float32), OUT_RATE)
