"""sdk/native/src/unicode_tables.cpp is what tools/gen_unicode_tables.py makes from the installed `tokenizers`
(python_ref's tokenizer) and unicodedata: regenerating gives the committed file byte for byte."""

import subprocess
import sys
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[2] / "sdk" / "native"


def test_unicode_tables_are_regenerated_identically(tmp_path):
    out = tmp_path / "unicode_tables.cpp"
    subprocess.run([sys.executable, str(NATIVE / "tools" / "gen_unicode_tables.py"), str(out)], check=True)
    committed = NATIVE / "src" / "unicode_tables.cpp"
    assert out.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), (
        f"{committed} is stale for this tokenizers/unicodedata: run python sdk/native/tools/gen_unicode_tables.py "
        "and commit the result")
