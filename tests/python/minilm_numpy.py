"""all-MiniLM-L6-v2 in numpy: the reference a native embedder is checked against.

The sentence-transformers model (a 6-layer BERT, then mean pooling over the
real tokens, then L2 normalisation) computed step by step in float32 from
the model's own files (config.json, sentence_bert_config.json,
tokenizer.json, model.safetensors), without torch or transformers. The
directory is ``$RPCOP_MODEL_DIR/all-MiniLM-L6-v2`` (default
``~/.cache/rpcop/models/all-MiniLM-L6-v2``), or ``--model-dir DIR``.

As a library, ``embed(texts)`` gives one unit vector (``np.ndarray`` of 384
float32) per text, None for None. As a command it is an rpcop instance
(the kit's contract: ``RPCOP_BIND``, ``RPCOP_TOKEN_FILE``, ...) serving,
batched, ``embed_text(VARCHAR) -> FixedSizeList(Float32, 384)``:

    RPCOP_MODEL_DIR=/models python3 tests/python/minilm_numpy.py
"""

import argparse
import json
import math
import os

# the instance's compute threads are the service's `threads` (BLAS reads
# these once, when numpy loads)
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, os.environ.get("RPCOP_THREADS", "1"))

from pathlib import Path  # noqa: E402
from typing import List, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from numpy.polynomial import Chebyshev, Polynomial  # noqa: E402
from numpy.polynomial.polynomial import polyval  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Encoding, Tokenizer  # noqa: E402

from rpcop_service import serve, udf  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
DIMENSION = 384
# texts per forward pass; a call's texts are sorted by length first, so
# that a long text pads only its own neighbours
PASS_SIZE = 64

# numpy has no erf. erfc(z) = t * exp(g(t) - z*z) with t = 2 / (2 + z),
# g smooth on (0, 1]: a polynomial of degree 16 interpolating math.erfc at
# Chebyshev points of z in [0, 12] (beyond, erfc < 1e-63: zero in float32)
# is within 2e-12 (relative) of math.erfc, so the GELU below is HF's exact
# one rounded to float32, but for a rare last-bit tie.
_ERFC_ZMAX = 12.0


def _erfc_exponent(t: np.ndarray) -> np.ndarray:
    z = 2.0 / t - 2.0
    return np.array([math.log(math.erfc(x) / u) + x * x for x, u in zip(z, t)])


_ERFC_COEFFICIENTS = (
    Chebyshev.interpolate(_erfc_exponent, 16, domain=[2.0 / (2.0 + _ERFC_ZMAX), 1.0])
    .convert(kind=Polynomial)
    .coef
)


def gelu(x: np.ndarray) -> np.ndarray:
    """HF's ``gelu``: x * Phi(x) = x / 2 * erfc(-x / sqrt 2), in float64,
    rounded to float32."""
    s = x.astype(np.float64) * -math.sqrt(0.5)
    z = np.minimum(np.abs(s), _ERFC_ZMAX)
    t = 2.0 / (2.0 + z)
    tail = t * np.exp(polyval(t, _ERFC_COEFFICIENTS) - z * z)  # erfc(|s|)
    return (0.5 * x * np.where(s >= 0, tail, 2.0 - tail)).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(variance + np.float32(eps)) * weight + bias


def default_model_dir() -> Path:
    root = os.environ.get("RPCOP_MODEL_DIR") or "~/.cache/rpcop/models"
    return Path(root).expanduser() / MODEL


class MiniLM:
    """The model of one directory, ready to embed."""

    def __init__(self, directory: Path):
        config = json.loads((directory / "config.json").read_text())
        if config["hidden_act"] != "gelu":
            raise ValueError(f"{directory}: hidden_act {config['hidden_act']!r}, not 'gelu'")
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        sentence_config = json.loads((directory / "sentence_bert_config.json").read_text())
        # tokenizer.json pads every text to 128 tokens and truncates at 128;
        # sentence-transformers pads per batch and truncates at max_seq_length
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=sentence_config["max_seq_length"])
        weights = load_file(str(directory / "model.safetensors"))

        def linear(name):
            # transposed once: x @ W.T + b as x @ W' + b
            return np.ascontiguousarray(weights[f"{name}.weight"].T), weights[f"{name}.bias"]

        def norm(name):
            return weights[f"{name}.weight"], weights[f"{name}.bias"]

        self.word = weights["embeddings.word_embeddings.weight"]
        self.position = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"]
        self.embedding_norm = norm("embeddings.LayerNorm")
        self.layers = []
        for i in range(config["num_hidden_layers"]):
            prefix = f"encoder.layer.{i}."
            self.layers.append({
                "query": linear(prefix + "attention.self.query"),
                "key": linear(prefix + "attention.self.key"),
                "value": linear(prefix + "attention.self.value"),
                "attention_out": linear(prefix + "attention.output.dense"),
                "attention_norm": norm(prefix + "attention.output.LayerNorm"),
                "intermediate": linear(prefix + "intermediate.dense"),
                "out": linear(prefix + "output.dense"),
                "out_norm": norm(prefix + "output.LayerNorm"),
            })

    def embed(self, texts: Sequence[Optional[str]]) -> List[Optional[np.ndarray]]:
        """One unit vector per text; None for None."""
        vectors: List[Optional[np.ndarray]] = [None] * len(texts)
        present = [i for i, text in enumerate(texts) if text is not None]
        encodings = self.tokenizer.encode_batch([texts[i] for i in present])
        order = sorted(range(len(present)), key=lambda j: len(encodings[j].ids))
        for start in range(0, len(order), PASS_SIZE):
            chunk = order[start : start + PASS_SIZE]
            for j, vector in zip(chunk, self._forward([encodings[j] for j in chunk])):
                vectors[present[j]] = vector
        return vectors

    def _forward(self, encodings: List[Encoding]) -> np.ndarray:
        """The embeddings of a few texts, padded to the longest of them."""
        batch, length = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.zeros((batch, length), np.int64)  # [PAD] is id 0
        types = np.zeros((batch, length), np.int64)
        mask = np.zeros((batch, length), np.float32)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            types[row, :n] = encoding.type_ids
            mask[row, :n] = encoding.attention_mask

        # the dense layers see one [batch * length, hidden] matrix
        h = self.word[ids] + self.position[:length] + self.token_type[types]
        h = layer_norm(h.reshape(batch * length, -1), *self.embedding_norm, self.eps)
        # as HF's extended attention mask: padding keys get float32's minimum
        key_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        head_size = h.shape[-1] // self.heads

        def heads(x):  # [batch * length, hidden] -> [batch, heads, length, head_size]
            return x.reshape(batch, length, self.heads, head_size).transpose(0, 2, 1, 3)

        for layer in self.layers:
            q, k, v = (heads(h @ w + b) for w, b in (layer["query"], layer["key"], layer["value"]))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_size) + key_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probabilities = scores / scores.sum(axis=-1, keepdims=True)
            context = (probabilities @ v).transpose(0, 2, 1, 3).reshape(batch * length, -1)
            w, b = layer["attention_out"]
            h = layer_norm(context @ w + b + h, *layer["attention_norm"], self.eps)
            w, b = layer["intermediate"]
            inner = gelu(h @ w + b)
            w, b = layer["out"]
            h = layer_norm(inner @ w + b + h, *layer["out_norm"], self.eps)

        # 1_Pooling: the mean over real tokens; 2_Normalize: unit length
        real = mask[:, :, None]
        pooled = (h.reshape(batch, length, -1) * real).sum(axis=1)
        pooled /= np.maximum(real.sum(axis=1), np.float32(1e-9))
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, np.float32(1e-12))


_model: Optional[MiniLM] = None


def load(directory: Optional[str] = None) -> MiniLM:
    """Loads the model (of ``directory``, else the default one) for ``embed``."""
    global _model
    _model = MiniLM(Path(directory) if directory else default_model_dir())
    return _model


def embed(texts: Sequence[Optional[str]]) -> List[Optional[np.ndarray]]:
    """The embedding of each text (384 float32, unit length); None for None.
    Loads the default model on first use unless ``load`` was called."""
    return (_model or load()).embed(texts)


@udf(input_types=["VARCHAR"], result_type=pa.list_(pa.float32(), DIMENSION), batch=True)
def embed_text(texts):
    return embed(texts.to_pylist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=f"{MODEL} in numpy, as an rpcop instance")
    parser.add_argument("--model-dir",
                        help=f"the model's files (default $RPCOP_MODEL_DIR/{MODEL})")
    options, _ = parser.parse_known_args()
    serve(embed_text, setup=lambda: load(options.model_dir))
