"""Properties of python_ref's WordPiece tokenizer on generated text (hypothesis): ids stay inside the vocabulary
and never forge a special token, normalisation (case, accents, whitespace) does not change the ids, and
decoding then encoding gives back the ids minus [UNK]."""

from __future__ import annotations

import unicodedata

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minivlm.python_ref.tokenizer import MAX_INPUT_CHARS_PER_WORD, Tokenizer  # noqa: E402

TOK = Tokenizer.default()
UNICODE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)  # any str UTF-8 can carry
ASCII_WORDS = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1,
                               max_size=12), max_size=8)
WHITESPACE = st.text(alphabet=" \t\n\r\u00a0\u3000\u2003", min_size=1, max_size=3)
COMBINING = st.characters(min_codepoint=0x300, max_codepoint=0x36F)


@given(UNICODE_TEXT)
def test_ids_are_in_the_vocabulary_and_never_a_special_other_than_unk(text):
    ids = TOK.encode(text)
    assert all(0 <= i < TOK.vocab_size for i in ids)
    assert not {TOK.pad_id, TOK.cls_id, TOK.sep_id, TOK.mask_id} & set(ids)
    assert TOK.encode(f"[SEP]{text}[CLS]").count(TOK.sep_id) == 0


@given(UNICODE_TEXT)
def test_decoding_then_encoding_gives_the_ids_back_without_unk(text):
    ids = TOK.encode(text)
    assert TOK.encode(TOK.decode(ids)) == [i for i in ids if i != TOK.unk_id]


@given(ASCII_WORDS, st.lists(WHITESPACE, min_size=8, max_size=8))
def test_whitespace_and_ascii_case_do_not_change_the_ids(words, spaces):
    spaced = "".join(w + s for w, s in zip(words, spaces))
    assert TOK.encode(spaced) == TOK.encode(" ".join(words)) == TOK.encode(" ".join(words).upper())


@given(st.lists(st.tuples(st.sampled_from("aeiouncyAEIOUNCY"), st.lists(COMBINING, max_size=3)), max_size=20))
def test_accents_are_stripped(letters):
    plain = "".join(c for c, _ in letters)
    accented = "".join(c + "".join(marks) for c, marks in letters)
    assert TOK.encode(accented) == TOK.encode(plain)
    assert TOK.encode(unicodedata.normalize("NFC", accented)) == TOK.encode(plain)


@given(st.text(alphabet="abcdefghij", min_size=MAX_INPUT_CHARS_PER_WORD + 1, max_size=MAX_INPUT_CHARS_PER_WORD + 40))
def test_words_over_the_limit_are_one_unk(word):
    assert TOK.encode(f"a {word} b") == [*TOK.encode("a"), TOK.unk_id, *TOK.encode("b")]
