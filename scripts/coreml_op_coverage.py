"""The MIL op census of Core ML builds and the tests of minivlm.coreml_executor that check each op: the table in
docs/ARCHITECTURE.md §6 ("Running Core ML builds on Linux").

    python scripts/coreml_op_coverage.py "demo fp16=out/demo-coreml-fp16" "student fp16=out/student-coreml-fp16"
    python scripts/coreml_op_coverage.py --write LABEL=BUILD ...   # replace the table in docs/ARCHITECTURE.md

Each column counts the ops of every function of a build's `model.mlpackage`; "tested by" lists the cases of
tests/sdk/coreml_cases*.py that hold the op to torch. The table sits between `<!-- COREML-OP-COVERAGE -->` and
`<!-- /COREML-OP-COVERAGE -->`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from minivlm.converters.coreml_spec import PACKAGE
from minivlm.coreml_executor import SUPPORTED_OPS, MILProgram

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
MARKER = "COREML-OP-COVERAGE"


def _cases_by_op() -> dict[str, list[str]]:
    sys.path.insert(0, str(ROOT / "tests" / "sdk"))
    from coreml_cases import cases

    by_op: dict[str, list[str]] = {}
    for case in cases():
        for op in case.ops:
            by_op.setdefault(op, []).append(case.id)
    return by_op


def table(builds: dict[str, Path]) -> str:
    counts = {label: MILProgram.load(path / PACKAGE).op_types() for label, path in builds.items()}
    tested = _cases_by_op()
    ops = sorted(set().union(*counts.values()))
    lines = [f"| op type | {' | '.join(builds)} | tested by (tests/sdk/coreml_cases*.py) |",
             "|---|" + "---:|" * len(builds) + "---|"]
    for op in ops:
        cases = tested.get(op, [])
        named = ", ".join(f"`{c}`" for c in cases[:3]) + (f" +{len(cases) - 3}" if len(cases) > 3 else "")
        status = named if named else "untested" if op in SUPPORTED_OPS else "NOT IMPLEMENTED"
        lines.append(f"| {op} | {' | '.join(str(counts[b].get(op, 0)) for b in builds)} | {status} |")
    others = sorted(SUPPORTED_OPS - set(ops))
    return "\n".join(lines) + f"\n\nAlso implemented and tested, in none of these builds: {', '.join(others)}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", help="LABEL=BUILD_FOLDER, one column each")
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    builds = {}
    for item in args.builds:
        label, sep, path = item.partition("=")
        if not sep or not (Path(path) / PACKAGE).is_dir():
            parser.error(f"{item!r}: expected LABEL=BUILD_FOLDER of a Core ML build (holding {PACKAGE})")
        builds[label] = Path(path)
    text = table(builds)
    if not args.write:
        print(text)
        return
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {MARKER} -->\n).*?(<!-- /{MARKER} -->)", re.S)
    if not pattern.search(doc):
        sys.exit(f"{DOC} has no <!-- {MARKER} --> ... <!-- /{MARKER} --> markers")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), doc), encoding="utf-8")


if __name__ == "__main__":
    main()
