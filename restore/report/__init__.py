"""What a person reads after a run: the compare report (find the songs and variants, measure
them with a cache, build the pages), spectrogram pictures on one scale, and the ghost (what
the MP3 threw away).

May import restore.analysis, restore.io, restore.engine's variant table and the shared
values; never restore.ui.
"""
