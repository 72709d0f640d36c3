"""Models and where they run: devices (choice, free memory, out-of-memory), the model cache
(load once per run, release before a bigger one), the model store (the catalogue, the models
folder, fetch and verify) and the one chunker (overlap-add, out-of-memory policy).

May import restore.audio, restore.errors and restore.io; never the engine, stages or UI.
torch is imported lazily, only where a model is used.
"""
