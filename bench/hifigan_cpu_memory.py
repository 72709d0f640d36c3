"""Peak memory of 08_hifigan on the CPU after capping its batch at one channel pair: the
full-size random-weight model on a 36 s stereo song. Prints the wall time, the shapes of the
model calls and the peak RSS. `python bench/hifigan_cpu_memory.py` from the repo root
(about 4 minutes here). A figure, never an assertion."""
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.examples import band  # noqa: E402
from restore.models.store import CATALOGUE  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from tests.support.random_hifigan import save_random_hifigan  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.bwe_hifigan import HifiganBweStage  # noqa: E402

SECONDS = 36.0


def main() -> None:
    models = Path(tempfile.mkdtemp())
    save_random_hifigan(models / CATALOGUE["hifigan-bwe"].filename)
    stage = HifiganBweStage(StageEnv(models_dir=models))
    stage.load(choose_device("cpu"))
    audio = band(SECONDS, seed=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    calls = []
    model = stage.model

    def recording(x, rate):
        calls.append(tuple(x.shape))
        return model(x, rate)

    stage.model = recording
    t0 = time.time()
    stage.process(audio, StageContext(options={"cutoff_hz": 16000.0}))
    wall = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{SECONDS:.0f} s stereo: {wall:.1f} s, RTF {wall / SECONDS:.2f}, calls {calls}, "
          f"peak RSS {peak} MiB (before process {before} MiB)")


if __name__ == "__main__":
    main()
