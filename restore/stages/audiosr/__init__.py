"""AudioSR (variants 02, 03, 10): the stage (stage.py) and the offline import of audiosr 0.0.7
without its download-at-import and training dependencies (compat.py)."""
