"""Measures of audio, as plain numbers for JSON:

  blocks.py    block-wise arithmetic over whole songs and the dB conventions (FLOOR_DB)
  spectrum.py  average spectrum, band power, the encoder's cutoff, the top band (what stages use)
  loudness.py  BS.1770-4 integrated loudness, EBU loudness range, true peak
  levels.py    sample peak, crest factor, clipping, stereo correlation and width
  compare.py   every song measure with deltas, and against a lossless reference (the report)
  stft.py      the short-time Fourier transform shared by the offline restore and the ghost

May import restore.audio only (and numpy, soxr).
"""
