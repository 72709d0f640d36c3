"""The published models' architectures, written here so that tests and benchmarks can build
randomly initialised models of the real size and save them in the real on-disk format
(compute cost does not depend on weight values). The product never uses these: it loads
the published files.

HiFi-GAN+ (Su et al., ICASSP 2021; hifi-gan-bwe): upsample to 48 kHz with a Kaiser-windowed
sinc resampler, pad half the receptive field with silence, a non-causal WaveNet (2 stacks x
8 gated layers, 128 channels, kernel 3, dilations 3^i), tanh, crop. Saved with
torch.jit.script + torch.jit.save; called as model(x, sample_rate) with x [T] or [B, 1, T].
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F


@torch.jit.script
def kaiser_resample(x: torch.Tensor, orig: int, new: int, width: int = 16, rolloff: float = 0.945,
                    beta: float = 14.769656459379492) -> torch.Tensor:
    """Band-limited resampling along the last axis (Kaiser-windowed sinc, polyphase);
    output length ceil(n * new / orig)."""
    if orig == new:
        return x
    a, b = orig, new
    while b:
        a, b = b, a % b
    orig, new = orig // a, new // a
    base = min(orig, new) * rolloff
    w = int(math.ceil(width * orig / base))
    idx = torch.arange(-w, w + orig, dtype=x.dtype, device=x.device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=x.dtype, device=x.device)[:, None, None] / new + idx
    t = (t * base).clamp(-width, width)
    window = torch.i0(beta * torch.sqrt(1 - (t / width) ** 2)) / torch.i0(torch.tensor(beta, dtype=x.dtype))
    t = t * math.pi
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    shape = x.shape
    n = shape[-1]
    flat = F.pad(x.reshape(-1, n), (w, w + orig))
    y = F.conv1d(flat[:, None], kernels, stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
    target = int(math.ceil(new * n / orig))
    out_shape = list(shape[:-1])
    out_shape.append(target)
    return y[..., :target].reshape(out_shape)


class GatedLayer(torch.nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = torch.nn.Conv1d(channels, channels, kernel, padding="same", dilation=dilation)
        self.skip = torch.nn.Conv1d(channels // 2, channels, 1)
        self.out = torch.nn.Conv1d(channels // 2, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        a, g = h.chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(g)
        return (self.out(h) + x) * math.sqrt(0.5), self.skip(h)


class HifiGanPlus(torch.nn.Module):
    def __init__(self, stacks: int = 2, layers: int = 8, channels: int = 128, kernel: int = 3,
                 dilation_base: int = 3, sample_rate: int = 48000):
        super().__init__()
        self.register_buffer("sample_rate", torch.tensor(sample_rate))
        self.conv_in = torch.nn.Conv1d(1, channels, 1)
        self.layers = torch.nn.ModuleList(
            [GatedLayer(channels, kernel, dilation_base ** i) for _ in range(stacks) for i in range(layers)])
        self.conv_out = torch.nn.Conv1d(channels, 1, 1)
        self.receptive_field = (kernel - 1) * stacks * sum(dilation_base ** i for i in range(layers))
        self.norm = 1.0 / math.sqrt(len(self.layers))

    def forward(self, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        squeeze = x.dim() == 1
        if squeeze:
            x = x[None, None]
        x = kaiser_resample(x, sample_rate, int(self.sample_rate))
        pad = self.receptive_field // 2
        h = self.conv_in(F.pad(x, [pad, pad]))
        skips = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h)
            skips = skips + s
        y = torch.tanh(self.conv_out(skips * self.norm))[..., pad:-pad]
        return y[0, 0] if squeeze else y


def save_random_hifigan(path: Path, seed: int = 0, **arch) -> Path:
    """A randomly initialised HiFi-GAN+ (full size unless `arch` says otherwise), scripted
    and saved as the published files are."""
    torch.manual_seed(seed)
    model = HifiGanPlus(**arch).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(model), str(path))
    return path
