"""The offline restore (variant 11): the stage (stage.py) and its DSP, the top band extended
from the music below it and encoder holes filled (highs.py)."""
