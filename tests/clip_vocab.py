"""A small CLIP-style BPE vocabulary learned from given texts, for tokenizer tests.

The layout is CLIP's: the 256 byte symbols, the same with the end-of-word mark `</w>`,
one symbol per merge in rank order, then the start and end tokens. Merges are learned
here by plain pair counting (most frequent pair first), independently of the code
under test; only the byte table is GPT-2's public one, rebuilt below.
"""
import collections
import gzip
import json
import os
import re


def _bytes_to_unicode():
  printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
  table, n = {}, 0
  for b in range(256):
    if b in printable:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + n)
      n += 1
  return table


def learn_merges(texts, num_merges: int = 300) -> list:
  """BPE merges [(a, b), ...] learned from `texts` by pair counting, in rank order."""
  table = _bytes_to_unicode()
  words = collections.Counter()
  for text in texts:
    for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()):
      chars = [table[b] for b in w.encode('utf-8')]
      words[tuple(chars[:-1] + [chars[-1] + '</w>'])] += 1
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for word, count in words.items():
      for pair in zip(word, word[1:]):
        pairs[pair] += count
    if not pairs:
      break
    best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
    merges.append(best)
    merged = collections.Counter()
    for word, count in words.items():
      out, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == best:
          out.append(word[i] + word[i + 1])
          i += 2
        else:
          out.append(word[i])
          i += 1
      merged[tuple(out)] += count
    words = merged
  return merges


def write_vocab(directory: str, texts, num_merges: int = 300) -> int:
  """Writes vocab.json + merges.txt learned from `texts`; returns the vocab size."""
  table = _bytes_to_unicode()
  merges = learn_merges(texts, num_merges)
  symbols = list(table.values())
  symbols += [s + '</w>' for s in symbols]
  symbols += [a + b for a, b in merges]
  symbols += ['<|startoftext|>', '<|endoftext|>']
  vocab = {}
  for s in symbols:  # a merge may re-create an existing symbol; keep the first id
    vocab.setdefault(s, len(vocab))
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(vocab, f, ensure_ascii=False)
  with open(os.path.join(directory, 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  return len(vocab)


def write_openai_bpe(directory: str, texts, num_merges: int = 300) -> int:
  """Learns merges from `texts` and writes them twice: OpenAI's layout
  (`bpe_simple_vocab_16e6.txt.gz`: a version line, then one merge per line) and, in
  `directory/hf`, Hugging Face's vocab.json + merges.txt with the ids OpenAI's
  `SimpleTokenizer` gives (byte symbols in `bytes_to_unicode()` order: printable bytes,
  then the others mapped to 256+; the same with `</w>`; merges; the two special
  tokens). Returns the vocab size."""
  table = _bytes_to_unicode()
  printable = [b for b in range(256) if ord(table[b]) == b]
  order = printable + [b for b in range(256) if b not in printable]
  merges = [m for m in learn_merges(texts, num_merges)]
  symbols = [table[b] for b in order]
  symbols += [s + '</w>' for s in symbols]
  symbols += [a + b for a, b in merges]
  symbols += ['<|startoftext|>', '<|endoftext|>']
  assert len(set(symbols)) == len(symbols), 'a merge repeats a symbol: ids would be ambiguous'
  os.makedirs(os.path.join(directory, 'hf'), exist_ok=True)
  with gzip.open(os.path.join(directory, 'bpe_simple_vocab_16e6.txt.gz'), 'wt',
                 encoding='utf-8') as f:
    f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + ''.join(f'{a} {b}\n'
                                                                 for a, b in merges))
  with open(os.path.join(directory, 'hf', 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump({s: i for i, s in enumerate(symbols)}, f, ensure_ascii=False)
  with open(os.path.join(directory, 'hf', 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  return len(symbols)
