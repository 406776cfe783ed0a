"""BERT's WordPiece tokenizer in pure Python, from a model folder's ``vocab.txt`` (no ``tokenizers``).

It gives the ids of the ``tokenizers`` fast tokenizer that BERT models ship (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece``, ``[CLS] ... [SEP]``; tests/engines/test_wordpiece.py compares
them on the development sets and hostile strings):

- the special tokens (``[CLS]``, ``[MASK]``, ...) are matched in the raw text first, as added tokens;
- each remaining span is cleaned (NUL, U+FFFD and control characters dropped, white space made a
  space), CJK ideographs set apart, accents stripped (NFD, marks dropped) and lower-cased, where
  ``tokenizer_config.json`` says so (``do_lower_case``; ``strip_accents`` follows it when unset);
- split on white space and around each punctuation character;
- each word split greedily into the longest vocabulary pieces (``##`` continuing), or ``[UNK]``
  where a piece is missing or the word is longer than 100 characters;
- truncated to ``max_length`` with ``[CLS]`` and ``[SEP]``, padded to the batch's longest.

Words are cached (a bounded dict): routing traffic repeats most of its words.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routeyard.router.errors import EncoderUnavailable

__all__ = ["WordPiece"]

MAX_WORD = 100
_CACHE = 50_000
_SPECIALS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Rust's char::is_whitespace (Unicode White_Space), which the fast tokenizer uses.
_SPACES = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_CONTROL = frozenset(("Cc", "Cf", "Co", "Cs"))  # dropped; unassigned code points (Cn) are kept
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+|[^ A-Za-z0-9]")  # after _ASCII_CLEAN: a word, or one punctuation
_ASCII_CLEAN = {c: (" " if chr(c) in "\t\n\r" else None) for c in [*range(32), 127]}


def _is_cjk(code: int) -> bool:
    return any(low <= code <= high for low, high in _CJK)


def _clean(text: str, cjk: bool) -> str:
    """Control, format and private-use characters (but tab, newline, return), NUL and U+FFFD dropped;
    white space -> ' '; CJK ideographs between spaces."""
    out = []
    for char in text:
        if char in "\t\n\r" or (char in _SPACES and unicodedata.category(char) not in _CONTROL):
            out.append(" ")
        elif char not in "\x00\ufffd" and unicodedata.category(char) not in _CONTROL:
            out.append(" " + char + " " if cjk and _is_cjk(ord(char)) else char)
    return "".join(out)


def _split(text: str) -> list[str]:
    """Words split on spaces, each punctuation character a word of its own."""
    words: list[str] = []
    for chunk in text.split():
        start = 0
        for i, char in enumerate(chunk):
            if char in _ASCII_PUNCT or unicodedata.category(char)[0] == "P":
                words.extend((chunk[start:i], char) if i > start else (char,))
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPiece:
    """``encode_batch(texts)`` -> (ids, attention mask) as lists of equal-length int lists."""

    def __init__(self, folder: Path, max_length: int) -> None:
        vocab_file = folder / "vocab.txt"
        if not vocab_file.is_file():
            raise EncoderUnavailable(f"{folder}: no vocab.txt (a BERT model folder has one)")
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
        self.vocab = {token: i for i, token in reversed(list(enumerate(t.rstrip("\r") for t in lines)))}
        self.vocab.pop("", None)
        config = _config(folder)
        self.lower = bool(config.get("do_lower_case", True))
        strip = config.get("strip_accents")
        self.strip_accents = self.lower if strip is None else bool(strip)
        self.cjk = bool(config.get("tokenize_chinese_chars", True))
        names = {key: str(config.get(key) or f"[{key.split('_')[0].upper()}]") for key in _SPECIALS}
        missing = [token for token in names.values() if token not in self.vocab]
        if missing:
            raise EncoderUnavailable(f"{vocab_file}: no {', '.join(missing)} in the vocabulary")
        self.unk, self.cls, self.sep, self.pad = (self.vocab[names[k + "_token"]] for k in ("unk", "cls", "sep", "pad"))
        specials = sorted(set(names.values()), key=len, reverse=True)
        self._specials = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self.max_length = max(2, max_length)
        self._words: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """``[CLS]`` + the text's ids, truncated to ``max_length`` + ``[SEP]``."""
        ids: list[int] = []
        for i, part in enumerate(self._specials.split(text)):
            if i % 2:
                ids.append(self.vocab[part])
            elif part:
                ids.extend(self._span(part))
        return [self.cls, *ids[: self.max_length - 2], self.sep]

    def encode_batch(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        rows = [self.encode(text) for text in texts]
        width = max((len(row) for row in rows), default=0)
        masks = [[1] * len(row) + [0] * (width - len(row)) for row in rows]
        return [row + [self.pad] * (width - len(row)) for row in rows], masks

    def _span(self, text: str) -> list[int]:
        if text.isascii():  # the common case: no accents, CJK or Unicode punctuation to look up
            text = (text.lower() if self.lower else text).translate(_ASCII_CLEAN)
            words = _ASCII_WORD.findall(text)
        else:
            words = _split(self._normalise(text))
        ids: list[int] = []
        for word in words:
            ids.extend(self._word(word))
        return ids

    def _normalise(self, text: str) -> str:
        text = _clean(text, self.cjk)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return "".join(c.lower() for c in text) if self.lower else text

    def _word(self, word: str) -> list[int]:
        found = self._words.get(word)
        if found is None:
            found = self._pieces(word)
            if len(self._words) >= _CACHE:
                self._words.clear()
            self._words[word] = found
        return found

    def _pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first: the whole word ``[UNK]`` where any piece is missing."""
        if len(word) > MAX_WORD:
            return [self.unk]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids


def _config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            config.update({k: v.get("content") if isinstance(v, dict) else v for k, v in data.items()})
    return config
