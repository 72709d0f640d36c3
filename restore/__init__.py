"""mp3restore: turn lossy MP3s into side-by-side restored FLAC variants.

Data flows one way: scan -> plan -> pipeline (stages) -> writers -> report.
The CLI and the menu only build a RunConfig and call `restore.engine.run.run`.
"""

__version__ = "0.1.0"
