"""Generate sdk/native/src/unicode_tables.cpp: the Unicode data the native WordPiece tokenizer needs.

python_ref/tokenizer.py runs HF `tokenizers` (BertNormalizer + BertPreTokenizer). Its Rust crates carry their
own, older Unicode tables (`unicode_categories`, `unicode-normalization-alignments`): e.g. it keeps unassigned
code points, which Python's `unicodedata` calls Cn, and does not strip marks added after Unicode 9. So the
per-code-point behaviour is read from `tokenizers` itself, one code point at a time (batched), and only the
canonical combining classes (used to reorder marks after NFD) come from `unicodedata`:

    flags         clean_text drops it / clean_text maps it to " " / CJK ideograph (isolated) / nonspacing mark
                  (strip_accents drops it) / pre-tokenizer whitespace / pre-tokenizer punctuation
    decompositions  NFD of each code point (Hangul syllables are left to the algorithm, checked here)
    lowercase     what `lowercase` maps each code point to (Rust `char::to_lowercase`, one or more code points)
    combining     canonical combining class != 0 (unicodedata)
    py_space      Python's str.isspace(), which python_ref's vocab reader rejects inside a token

Usage: python sdk/native/tools/gen_unicode_tables.py [OUT]   (default: sdk/native/src/unicode_tables.cpp)
tests/native/test_unicode_tables.py regenerates the file and requires it to be identical.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import normalizers, pre_tokenizers

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "unicode_tables.cpp"
MAX_CODE_POINT = 0x10FFFF
CHUNK = 8192
SEP = "\x01"  # separator for the stages that never drop or split it (NFD, strip, lowercase)

# Flag bits, mirrored in src/unicode.hpp.
REMOVE, CLEAN_SPACE, CJK, NONSPACING, PRE_SPACE, PUNCT = 1, 2, 4, 8, 16, 32

# tokenizers `BertNormalizer::is_chinese_char` (the CJK Unified Ideographs blocks BERT isolates).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def _normalizer(**on: bool) -> normalizers.BertNormalizer:
    options = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    options.update(on)
    return normalizers.BertNormalizer(**options)


def _code_points() -> list[int]:
    return [c for c in range(MAX_CODE_POINT + 1) if not 0xD800 <= c <= 0xDFFF]


def _chunks(items: list[int]) -> list[list[int]]:
    return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]


def _per_char(normalizer, cps: list[int]) -> dict[int, str]:
    """What `normalizer` makes of each code point alone (none of these stages crosses SEP)."""
    out = {}
    for chunk in _chunks([c for c in cps if chr(c) != SEP]):
        pieces = normalizer.normalize_str(SEP.join(map(chr, chunk))).split(SEP)
        assert len(pieces) == len(chunk), "a stage merged or split the separator"
        out.update(zip(chunk, pieces))
    out[ord(SEP)] = normalizer.normalize_str(SEP)
    return out


def _clean_flags(cps: list[int]) -> dict[int, int]:
    """clean_text: each code point is kept, dropped, or becomes a space."""
    clean = _normalizer(clean_text=True)
    flags = {}
    for chunk in _chunks(cps):
        text = clean.normalize_str("".join("a" + chr(c) for c in chunk))
        pos = 0
        for c in chunk:
            ch = chr(c)
            assert text[pos] == "a"
            pos += 1
            if ch == " ":
                flags[c] = CLEAN_SPACE
                pos += 1
            elif ch != "a" and text.startswith(ch, pos):
                flags[c] = 0
                pos += 1
            elif ch != "a" and text.startswith(" ", pos):
                flags[c] = CLEAN_SPACE
                pos += 1
            elif ch == "a":
                assert text.startswith("a", pos)
                flags[c] = 0
                pos += 1
            else:
                flags[c] = REMOVE
        assert pos == len(text)
    return flags


def _pre_tokenizer_flags(cps: list[int]) -> dict[int, int]:
    """BertPreTokenizer: whitespace splits and disappears; punctuation becomes its own word."""
    pre = pre_tokenizers.BertPreTokenizer()
    flags = {}
    for chunk in _chunks(cps):
        words = pre.pre_tokenize_str("".join("x" + chr(c) for c in chunk) + "x")
        covered, alone = set(), set()
        for _word, (start, end) in words:
            covered.update(range(start, end))
            if end - start == 1:
                alone.add(start)
        for i, c in enumerate(chunk):
            offset = 2 * i + 1
            flags[c] = PRE_SPACE if offset not in covered else PUNCT if offset in alone else 0
    return flags


def _is_cjk(c: int) -> bool:
    return any(a <= c <= b for a, b in CJK_RANGES)


def _hangul_nfd(c: int) -> str:
    s = c - HANGUL_FIRST
    lead, vowel, trail = 0x1100 + s // 588, 0x1161 + (s % 588) // 28, 0x11A7 + s % 28
    return chr(lead) + chr(vowel) + (chr(trail) if trail != 0x11A7 else "")


def tables() -> dict[str, object]:
    cps = _code_points()
    flags = {c: f for c, f in _clean_flags(cps).items()}
    for c, f in _pre_tokenizer_flags(cps).items():
        flags[c] |= f
    cjk_normalizer = _normalizer(handle_chinese_chars=True)
    for chunk in _chunks(cps):
        text = "".join(map(chr, chunk))
        expected = "".join(f" {chr(c)} " if _is_cjk(c) else chr(c) for c in chunk)
        assert cjk_normalizer.normalize_str(text) == expected, "tokenizers changed its CJK ranges"
    for c in cps:
        if _is_cjk(c):
            flags[c] |= CJK
    nfd = _per_char(normalizers.NFD(), cps)
    decompositions = {c: d for c, d in nfd.items() if d != chr(c)}
    for c in range(HANGUL_FIRST, HANGUL_LAST + 1):
        assert decompositions.pop(c) == _hangul_nfd(c), f"Hangul U+{c:04X} does not follow the algorithm"
    stripped = _per_char(_normalizer(strip_accents=True), [c for c in cps if nfd[c] == chr(c)])
    for c, s in stripped.items():
        if s == "":
            flags[c] |= NONSPACING
        else:
            assert s == chr(c), f"strip_accents changed U+{c:04X} beyond dropping it"
    for c, d in decompositions.items():
        kept = "".join(ch for ch in d if not flags[ord(ch)] & NONSPACING)
        assert _normalizer(strip_accents=True).normalize_str(chr(c)) == kept
    lowercase = {c: s for c, s in _per_char(_normalizer(lowercase=True), cps).items() if s != chr(c)}
    combining = {c: unicodedata.combining(chr(c)) for c in cps if unicodedata.combining(chr(c))}
    py_space = [c for c in cps if chr(c).isspace()]
    return dict(flags=flags, decompositions=decompositions, lowercase=lowercase, combining=combining,
                py_space=py_space)


def _runs(values: dict[int, int]) -> list[tuple[int, int]]:
    """(start, value) wherever the value changes, over 0..MAX_CODE_POINT (surrogates take the value before)."""
    runs, previous = [], None
    for c in range(MAX_CODE_POINT + 1):
        v = values.get(c, previous if 0xD800 <= c <= 0xDFFF else 0)
        if v != previous:
            runs.append((c, v))
            previous = v
    return runs


def _rows(items: list[str], per_line: int) -> str:
    return "\n".join("    " + " ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def render(t: dict[str, object]) -> str:
    flags, decompositions, lowercase, combining = t["flags"], t["decompositions"], t["lowercase"], t["combining"]
    flag_runs = _runs(flags)
    ccc_runs = _runs(combining)
    decomposition_data, decomposition_index = [], []
    for c in sorted(decompositions):
        decomposition_index.append(f"{{0x{c:X}, {len(decomposition_data)}, {len(decompositions[c])}}},")
        decomposition_data += [f"0x{ord(ch):X}," for ch in decompositions[c]]
    lower_data, lower_index = [], []
    for c in sorted(lowercase):
        lower_index.append(f"{{0x{c:X}, {len(lower_data)}, {len(lowercase[c])}}},")
        lower_data += [f"0x{ord(ch):X}," for ch in lowercase[c]]
    return f"""// Generated by sdk/native/tools/gen_unicode_tables.py from tokenizers {tokenizers.__version__} (python_ref's
// BertNormalizer / BertPreTokenizer, probed per code point) and unicodedata {unicodedata.unidata_version} (combining
// classes). Do not edit: regenerate, and tests/native/test_unicode_tables.py checks that the two agree.
#include "unicode.hpp"

namespace minivlm::unicode {{

const Run kFlagRuns[] = {{
{_rows([f"{{0x{c:X}, {v}}}," for c, v in flag_runs], 6)}
}};
const size_t kNumFlagRuns = {len(flag_runs)};

const Run kCombiningRuns[] = {{
{_rows([f"{{0x{c:X}, {v}}}," for c, v in ccc_runs], 6)}
}};
const size_t kNumCombiningRuns = {len(ccc_runs)};

const char32_t kDecompositionData[] = {{
{_rows(decomposition_data, 10)}
}};
const Mapping kDecompositions[] = {{
{_rows(decomposition_index, 4)}
}};
const size_t kNumDecompositions = {len(decomposition_index)};

const char32_t kLowercaseData[] = {{
{_rows(lower_data, 10)}
}};
const Mapping kLowercase[] = {{
{_rows(lower_index, 4)}
}};
const size_t kNumLowercase = {len(lower_index)};

const char32_t kPythonSpace[] = {{
{_rows([f"0x{c:X}," for c in t["py_space"]], 10)}
}};
const size_t kNumPythonSpace = {len(t["py_space"])};

}}  // namespace minivlm::unicode
"""


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.write_text(render(tables()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
