"""CLIP's byte-level BPE tokenizer, read from the tokenizer files of a CLIP directory.

The steps are those of OpenAI's `clip.tokenize` (used to make the public CLIP query
features): clean the text (Unicode NFC, HTML entities unescaped twice, whitespace runs
collapsed, stripped), lower-case it, split it with CLIP's word pattern, map each word's
UTF-8 bytes to printable characters (GPT-2's byte table), mark the word's end with
`</w>` and apply the merges in rank order. A query becomes
`<|startoftext|> tokens <|endoftext|>` padded to the 77-token context; longer queries
keep their first 75 tokens (what `clip.tokenize(truncate=True)` and Hugging Face's
`CLIPTokenizer(truncation=True)` do). Like OpenAI's, the cleaning first repairs
mis-decoded text with `ftfy.fix_text` (`cafÃ©` -> `café`) when ftfy is installed (it
is in the `features` extra); without it only the NFC normalization is applied, which
gives the same tokens on clean Unicode.

A literal `<|startoftext|>` or `<|endoftext|>` in a query (exactly so, case and all)
becomes that special token, and the text on each side is tokenized on its own, as
transformers' `CLIPTokenizer` does (it splits on its special tokens before any
normalization); any other spelling (`<|ENDOFTEXT|>`, or one produced by unescaping
`&lt;|endoftext|&gt;`) is ordinary text: `<|`, `endoftext`, `|>`.

Files: `vocab.json` + `merges.txt` (Hugging Face `save_pretrained`), else
`tokenizer.json` (Hugging Face tokenizers format), else OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (the file `clip.tokenize` reads: gzip text, a version
line, then one merge per line; `from_openai_bpe`).
"""
import functools
import gzip
import html
import json
import os
import unicodedata

import numpy as np

try:
  import regex  # \p{L} / \p{N} classes; a dependency of transformers and of CLIP itself
except ImportError:  # pragma: no cover
  regex = None
try:
  import ftfy  # repairs mojibake as OpenAI's clip.tokenize does
except ImportError:  # pragma: no cover
  ftfy = None

BOS = '<|startoftext|>'
EOS = '<|endoftext|>'
WORD_END = '</w>'
_NEVER = float('inf')
OPENAI_BPE = 'bpe_simple_vocab_16e6.txt.gz'
# OpenAI's `SimpleTokenizer` keeps the first 49152 - 256 - 2 merges of its file (the
# vocabulary is 2 x 256 byte symbols + merges + 2 special tokens = 49408).
OPENAI_MAX_MERGES = 49152 - 256 - 2
# CLIP's word pattern without its two special-token alternatives (those are split off
# the raw text first, see the module docstring): English contractions, letter runs,
# single digits, runs of other non-space characters.
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_SPECIAL = (BOS, EOS)


@functools.lru_cache(maxsize=1)
def byte_table() -> dict:
  """byte value -> printable character (GPT-2's reversible byte-to-unicode table).

  Printable Latin-1 bytes map to themselves; the other 68 bytes map, in byte order, to
  the code points 256, 257, ... so that no token contains whitespace or control chars.
  """
  keep = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
          + list(range(ord('®'), ord('ÿ') + 1)))
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def openai_byte_symbols() -> list:
  """The 256 byte symbols in the order of OpenAI's `bytes_to_unicode()` values (the
  first 256 ids of CLIP's vocabulary): printable bytes first, then the others."""
  table = byte_table()
  printable = [b for b in range(256) if ord(table[b]) == b]
  return [table[b] for b in printable + [b for b in range(256) if ord(table[b]) != b]]


def clean(text: str) -> str:
  """OpenAI's `basic_clean` + `whitespace_clean`, lower-cased."""
  if ftfy is not None:
    text = ftfy.fix_text(text)      # NFC included
  else:
    text = unicodedata.normalize('NFC', text)
  text = html.unescape(html.unescape(text)).strip()
  return ' '.join(text.split()).lower()


class ClipTokenizer:
  """texts -> (ids, mask) int32 (B, context_length), CLIP's BPE."""

  def __init__(self, vocab: dict, merges: list, context_length: int = 77,
               pad_token: str = EOS, source: str = '<vocab>'):
    if regex is None:
      raise ImportError("the CLIP tokenizer needs the `regex` package "
                        "(pip install 'momentdiff-jax[features]')")
    for tok in (BOS, EOS, pad_token):
      if tok not in vocab:
        raise ValueError(f'{source}: vocabulary has no {tok!r} token')
    self.vocab = vocab
    self.ranks = {tuple(m): i for i, m in enumerate(merges)}
    self.context_length = context_length
    self.bos_id, self.eos_id, self.pad_id = vocab[BOS], vocab[EOS], vocab[pad_token]
    self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
    self._special = regex.compile('(' + '|'.join(regex.escape(t) for t in _SPECIAL) + ')')
    self._bytes = byte_table()
    self._cache = {}
    self._source = source

  @classmethod
  def from_dir(cls, path: str, context_length: int = 77) -> 'ClipTokenizer':
    vocab_file, merges_file = (os.path.join(path, f) for f in ('vocab.json', 'merges.txt'))
    tok_file = os.path.join(path, 'tokenizer.json')
    if os.path.isfile(vocab_file) and os.path.isfile(merges_file):
      with open(vocab_file, encoding='utf-8') as f:
        vocab = json.load(f)
      with open(merges_file, encoding='utf-8') as f:
        lines = f.read().split('\n')
      merges = [tuple(l.split()) for l in lines if l.strip() and not l.startswith('#version')]
      source = vocab_file
    elif os.path.isfile(tok_file):
      with open(tok_file, encoding='utf-8') as f:
        model = json.load(f)['model']
      vocab = model['vocab']
      merges = [tuple(m.split(' ')) if isinstance(m, str) else tuple(m)
                for m in model['merges']]
      source = tok_file
    elif os.path.isfile(os.path.join(path, OPENAI_BPE)):
      return cls.from_openai_bpe(os.path.join(path, OPENAI_BPE), context_length)
    else:
      raise FileNotFoundError(
          f'{path}: no CLIP tokenizer files (vocab.json + merges.txt, tokenizer.json, or '
          f'OpenAI\'s {OPENAI_BPE}). They come with the CLIP weights, e.g. '
          'openai/clip-vit-base-patch32 on the Hugging Face hub, or with OpenAI\'s `clip` '
          'package; they are needed for query features only.')
    bad = [m for m in merges if len(m) != 2]
    if bad:
      raise ValueError(f'{source}: malformed merges {bad[:3]}')
    pad = EOS
    cfg_file = os.path.join(path, 'tokenizer_config.json')
    if os.path.isfile(cfg_file):
      with open(cfg_file, encoding='utf-8') as f:
        pad = json.load(f).get('pad_token') or EOS
      pad = pad['content'] if isinstance(pad, dict) else pad
    return cls(vocab, merges, context_length, pad, source)

  @classmethod
  def from_openai_bpe(cls, path: str, context_length: int = 77) -> 'ClipTokenizer':
    """OpenAI's `bpe_simple_vocab_16e6.txt.gz`: the vocabulary is built from the merges
    as `clip/simple_tokenizer.py` does (byte symbols, the same + `</w>`, one symbol per
    merge, the two special tokens; a repeated symbol takes its last id)."""
    try:
      with gzip.open(path, 'rt', encoding='utf-8') as f:
        lines = f.read().split('\n')
    except (OSError, EOFError, UnicodeDecodeError) as e:
      raise ValueError(f'{path}: not a gzip BPE merges file ({e})') from e
    # Line 0 is the version header; a short (test) file may end with an empty line.
    merges = [tuple(l.split()) for l in lines[1:OPENAI_MAX_MERGES + 1] if l.strip()]
    bad = [m for m in merges if len(m) != 2]
    if bad:
      raise ValueError(f'{path}: malformed merges {bad[:3]}')
    symbols = openai_byte_symbols()
    symbols = symbols + [s + WORD_END for s in symbols] + [''.join(m) for m in merges]
    vocab = {s: i for i, s in enumerate(symbols + [BOS, EOS])}
    return cls(vocab, merges, context_length, EOS, path)

  def _bpe(self, word: str) -> list:
    """One pre-token (printable-byte string) -> its BPE symbols."""
    if word in self._cache:
      return self._cache[word]
    symbols = list(word[:-1]) + [word[-1] + WORD_END]
    while len(symbols) > 1:
      best = min(zip(symbols, symbols[1:]), key=lambda p: self.ranks.get(p, _NEVER))
      if best not in self.ranks:
        break
      a, b = best
      merged, i = [], 0
      while i < len(symbols):  # merge every occurrence, left to right
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
          merged.append(a + b)
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    self._cache[word] = symbols
    return symbols

  def encode(self, text: str) -> list:
    """Token ids of `text`, without the added start/end tokens (a literal special
    token in `text` gives its id)."""
    ids = []
    for part in self._special.split(text):
      if part in _SPECIAL:
        ids.append(self.vocab[part])
      elif part:
        ids.extend(self._encode_words(part))
    return ids

  def _encode_words(self, text: str) -> list:
    ids = []
    for piece in self._pattern.findall(clean(text)):
      word = ''.join(self._bytes[b] for b in piece.encode('utf-8'))
      for sym in self._bpe(word):
        if sym not in self.vocab:
          raise ValueError(f'{self._source}: BPE symbol {sym!r} (from {text!r}) is not in '
                           'the vocabulary; vocab.json and merges.txt do not match')
        ids.append(self.vocab[sym])
    return ids

  def __call__(self, texts):
    """list[str] -> ids, mask int32 (B, context_length); mask 1 on start..end tokens."""
    if isinstance(texts, str):
      raise TypeError('tokenize takes a list of strings')
    n = len(texts)
    ids = np.full((n, self.context_length), self.pad_id, np.int32)
    mask = np.zeros((n, self.context_length), np.int32)
    for row, text in enumerate(texts):
      toks = self.encode(text)[:self.context_length - 2]
      toks = [self.bos_id] + toks + [self.eos_id]
      ids[row, :len(toks)] = toks
      mask[row, :len(toks)] = 1
    return ids, mask
