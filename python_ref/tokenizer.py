"""BERT uncased WordPiece tokenizer, built on the `tokenizers` library (no hand-written WordPiece).

Mirrors the pipeline of HF `BertTokenizerFast` for `bert-base-uncased` / MiniLM (the `tokenizer.json` shipped
with sentence-transformers/all-MiniLM-L6-v2): `BertNormalizer` (clean text, isolate CJK characters,
lowercase, strip accents) -> `BertPreTokenizer` (whitespace + punctuation) -> `WordPiece` ("[UNK]", "##",
words over 100 characters become [UNK]) -> `WordPiece` decoder.

One deliberate difference: special-token *strings* in user text are not matched. `"[SEP]"` typed by a user
is the three tokens `[`, `sep`, `]`, never id 102, so a question or caption can never forge the
`[CLS] text [SEP] tags [SEP]` layout. The packer in `packing.py` inserts the specials by id.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

from .errors import ConfigError, InputError

DEFAULT_VOCAB = Path(__file__).resolve().parent / "vocab.txt"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 100  # BERT: longer words become a single [UNK]


def _read_vocab(path: Path) -> dict[str, int]:
    """token -> id (the line number), as BERT's `load_vocab` reads it; ConfigError on a bad file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"vocab file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"vocab file {path} is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"vocab file {path} cannot be read: {e.strerror}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the trailing newline of the last token
    if not lines:
        raise ConfigError(f"vocab file {path} is empty")
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token == "" or any(c.isspace() for c in token):
            raise ConfigError(f"vocab file {path} line {i + 1} is malformed: {token!r} (one token per line, no spaces)")
        if token in vocab:
            first = vocab[token] + 1
            raise ConfigError(f"vocab file {path} line {i + 1} repeats token {token!r} (first on line {first})")
        vocab[token] = i
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ConfigError(f"vocab file {path} lacks the special tokens {', '.join(missing)}")
    return vocab


def check_unicode(text: str, what: str) -> str:
    """`text` if it can be encoded as UTF-8, else InputError naming the first bad position.

    Undecodable bytes reach Python as lone surrogates (`"\\udcff"`: what `sys.argv` holds for a non-UTF-8
    command-line argument, and what `errors="surrogateescape"` reads from a file). They are refused rather
    than replaced by U+FFFD: a question whose bytes were garbled should be retyped, not answered as
    something else."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} is not valid UTF-8 text: {text[e.start]!r} at character {e.start} is an "
                         "undecodable byte or lone surrogate; pass UTF-8 text") from None
    return text


class Tokenizer:
    """BERT uncased WordPiece over a `vocab.txt`. Encodes without specials; decodes skipping them."""

    def __init__(self, vocab: dict[str, int]) -> None:
        tok = _HFTokenizer(
            models.WordPiece(
                vocab,
                unk_token="[UNK]",
                continuing_subword_prefix="##",
                max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
            )
        )
        # strip_accents=True is what BERT uncased does (HF's None means "follow lowercase").
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        self._tok = tok
        self._vocab_size = len(vocab)
        self._specials = frozenset(vocab[t] for t in SPECIAL_TOKENS)
        self._ids = {t: vocab[t] for t in SPECIAL_TOKENS}

    @classmethod
    def from_vocab(cls, path: str | Path) -> Tokenizer:
        """A tokenizer over the vocab file at `path` (one token per line, id = line number)."""
        return cls(_read_vocab(Path(path)))

    @classmethod
    def default(cls) -> Tokenizer:
        """The bundled uncased BERT vocabulary (30522 tokens)."""
        return cls.from_vocab(DEFAULT_VOCAB)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return self._ids["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self._ids["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self._ids["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self._ids["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self._ids["[MASK]"]

    def special_ids(self) -> dict[str, int]:
        """Each of SPECIAL_TOKENS -> its id, in that order."""
        return {token: self._ids[token] for token in SPECIAL_TOKENS}

    def describe(self, vocab_file: str) -> dict:
        """What a build's manifest says of this tokenizer, whose vocabulary the build holds as `vocab_file`."""
        return {
            "vocab_file": vocab_file, "vocab_size": self.vocab_size, "kind": "BERT uncased WordPiece",
            "lowercase": True, "strip_accents": True, "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD,
            "specials": self.special_ids(),
            "special_strings_in_text": "not matched (typed '[SEP]' is three tokens)",
        }

    @staticmethod
    def _check_text(text: object) -> str:
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        return check_unicode(text, "text")

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP], untruncated."""
        return self._tok.encode(self._check_text(text), add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        """WordPiece tokens of `text` (e.g. `["play", "##ing"]`)."""
        return self._tok.encode(self._check_text(text), add_special_tokens=False).tokens

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of one id."""
        return self._tok.id_to_token(self._check_ids([token_id])[0])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, skipping [PAD]/[UNK]/[CLS]/[SEP]/[MASK] (as HF `skip_special_tokens=True`)."""
        kept = [i for i in self._check_ids(ids) if i not in self._specials]
        return self._tok.decode(kept, skip_special_tokens=False)

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        if isinstance(ids, (str, bytes)):
            raise InputError(f"ids must be a sequence of ints, got {type(ids).__name__}")
        try:
            out = [operator.index(i) for i in ids]
        except TypeError:
            raise InputError("ids must be a sequence of ints") from None
        bad = [i for i in out if not 0 <= i < self._vocab_size]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the vocabulary [0, {self._vocab_size})")
        return out


__all__ = ["DEFAULT_VOCAB", "SPECIAL_TOKENS", "Tokenizer", "check_unicode"]
