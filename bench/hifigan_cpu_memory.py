"""Peak memory of 08_hifigan on the CPU after capping its batch at one channel pair: the full-size
random-weight model on a 36 s stereo song; prints the wall time, the model calls (shapes) and
the peak RSS. `python bench/hifigan_cpu_memory.py` from the repo root (about 4 minutes here)."""
import sys, time, resource; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from pathlib import Path
import tempfile
from restore.reference_models import save_random_hifigan
from restore.model_store import CATALOGUE
from restore.stages import StageEnv, StageContext
from restore.stages.bwe_hifigan import HifiganBweStage
from restore.models import choose_device
from restore.examples import band
d = Path(tempfile.mkdtemp()); save_random_hifigan(d / CATALOGUE["hifigan-bwe"].filename)
s = HifiganBweStage(StageEnv(models_dir=d)); s.load(choose_device("cpu"))
a = band(36.0, seed=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
calls = []
real = s.model
s.model = lambda x, r: (calls.append(tuple(x.shape)), real(x, r))[1]
t = time.time(); s.process(a, StageContext(options={"cutoff_hz": 16000.0})); dt = time.time() - t
print(f"36 s stereo: {dt:.1f} s, RTF {dt/36:.2f}, calls {calls}, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024} MiB (before process {before} MiB)")
