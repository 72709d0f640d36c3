"""Test and benchmark fixtures, outside the product's import path: generated example songs,
covers and tagged MP3s (examples.py) and the published model architectures with random
weights saved in each library's own on-disk format (random_hifigan, random_audiosr,
random_demucs)."""
