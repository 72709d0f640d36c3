"""python -m tests.golden [--update [--force]] [STAGE ...]: check (or record) the golden
outputs of the stages (see tests/golden/__init__.py). Run from the repository root."""
from __future__ import annotations

import argparse
import json
import sys

from tests.golden import CASES, RECORDS, check, load_records, output_of, revision_of, why_not_here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
    parser.add_argument("stages", nargs="*", metavar="STAGE", help="only these stages (default: all)")
    parser.add_argument("--update", action="store_true", help="record the outputs of stages whose revision changed or that have no record")
    parser.add_argument("--force", action="store_true", help="with --update: record even an output that changed at the same revision "
                        "(only when the case's input changed, not the stage)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.stages if s not in CASES]
    if unknown:
        parser.error(f"no golden case for {', '.join(unknown)} (there are: {', '.join(CASES)})")
    records = load_records()
    failed = 0
    for name in args.stages or list(CASES):
        why = why_not_here(name)
        if why:
            print(f"{name}: skipped ({why})")
            continue
        revision = revision_of(name)
        got = output_of(name)
        problem = check(name, revision, got, records.get(name))
        if problem is None:
            print(f"{name}: revision {revision}, output as recorded")
        elif args.update and (problem.startswith("output of") is False or args.force):
            records[name] = {"revision": revision, **got}
            print(f"{name}: recorded at revision {revision}")
        else:
            failed += 1
            print(problem)
    if args.update:
        RECORDS.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
