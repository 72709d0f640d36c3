"""The flow: scan the inputs, plan songs x variants against the `_done` markers, run each
song's work (decode once, stages, writers, marker), summarise.

  scan.py      inputs -> Tracks (paths cleaned, MP3 facts, fingerprints); read-only
  variants.py  the variant table: named recipes of stages
  plan.py      Tracks x Variants -> Jobs (done, to do and why, unavailable and why); pure
  run.py       executes a plan: order, model lifetime, shared steps, claims, the summary
  markers.py   the `_done` markers that make an output count as finished
  locking.py logs.py summary.py config.py   claims, log files, what a run did, the run config

May import restore.stages, restore.models, restore.analysis, restore.io and the shared values;
never restore.ui or restore.report (the run calls the report through one late import).
"""
