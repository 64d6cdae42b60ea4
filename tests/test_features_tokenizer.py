"""Our CLIP BPE tokenizer == transformers' CLIPTokenizer on real annotation queries."""
import glob
import gzip
import json
import os

import numpy as np
import pytest
import transformers

from momentdiff_jax.features import clip_tokenizer  # pylint: disable=g-import-not-at-top
from momentdiff_jax.features.clip_tokenizer import ClipTokenizer  # pylint: disable=g-import-not-at-top
from tests import clip_vocab  # pylint: disable=g-import-not-at-top

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'annotations')
ANNOTATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                           'data', 'annotations')
EDGE_CASES = ["It's 12 O'CLOCK!!  ok", '  tabs\tand\nnewlines  ', 'crème brûlée in a café',
              'person picks up bottle of water & drinks.', 'a' * 40, 'word ' * 100, '']


def _queries(root):
  """{file: its queries} for every annotation file with queries under `root`/*/."""
  per_file = {}
  for path in sorted(glob.glob(os.path.join(root, '*', '*.jsonl'))):
    with open(path, encoding='utf-8') as f:
      rows = [json.loads(line) for line in f if line.strip()]
    if rows and 'query' in rows[0]:
      per_file[path] = [r['query'] for r in rows]
  return per_file


def _check_against_transformers(tmp_path, per_file, vocab_every: int):
  """Vocabulary learned from every `vocab_every`-th query; tested on ~40 others per file."""
  train = [q for qs in per_file.values() for q in qs[::vocab_every]]
  test = [q for qs in per_file.values() for q in qs[3::max(1, len(qs) // 40)][:40]]
  assert len(test) >= 300
  clip_vocab.write_vocab(str(tmp_path), train, num_merges=400)
  ours = ClipTokenizer.from_dir(str(tmp_path))
  ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
  texts = test + EDGE_CASES
  ids, mask = ours(texts)
  out = ref(texts, padding='max_length', max_length=77, truncation=True)
  ref_ids, ref_mask = np.asarray(out['input_ids']), np.asarray(out['attention_mask'])
  for i, text in enumerate(texts):
    assert ids[i].tolist() == ref_ids[i].tolist(), text
  np.testing.assert_array_equal(mask, ref_mask)
  # real merges were exercised: most queries need fewer tokens than characters
  lengths = mask.sum(1)[:len(test)] - 2
  assert np.mean(lengths < np.array([len(t) for t in test]) / 2) > 0.9


def test_matches_transformers_clip_tokenizer(tmp_path):
  """On the annotation cuts in tests/fixtures (Charades-STA, its anti-bias files,
  QVHighlights, TACoS: ~1,700 queries)."""
  per_file = _queries(FIXTURES)
  assert len(per_file) >= 8
  _check_against_transformers(tmp_path, per_file, vocab_every=5)


@pytest.mark.skipif(not glob.glob(os.path.join(ANNOTATIONS, '*', '*.jsonl')),
                    reason='full annotation files (../shared/data/annotations) absent; '
                    'the cuts in tests/fixtures are tested above')
def test_matches_transformers_on_every_full_annotation_file(tmp_path):
  _check_against_transformers(tmp_path, _queries(ANNOTATIONS), vocab_every=25)


def test_tokenizer_json_and_missing_files(tmp_path):
  clip_vocab.write_vocab(str(tmp_path / 'a'), ['the cat sat on the mat'], num_merges=10)
  ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / 'a'))
  ref.backend_tokenizer.save(str(tmp_path / 'tokenizer.json'))
  ids, mask = ClipTokenizer.from_dir(str(tmp_path))(['The cat sat on the mat.'])
  expect = ref(['The cat sat on the mat.'], padding='max_length', max_length=77)
  assert ids.tolist() == expect['input_ids'] and mask.tolist() == expect['attention_mask']
  with pytest.raises(FileNotFoundError, match='vocab.json.*bpe_simple_vocab_16e6.txt.gz'):
    ClipTokenizer.from_dir(str(tmp_path / 'a' / 'nothing'))


def test_clean_repairs_mojibake_like_openai(tmp_path):
  """OpenAI's basic_clean: ftfy.fix_text, HTML entities unescaped twice, whitespace."""
  from momentdiff_jax.features.clip_tokenizer import clean  # pylint: disable=g-import-not-at-top
  assert clean('  Person opens the cafÃ©   door &amp;amp; LEAVES ') == \
      'person opens the café door & leaves'
  clip_vocab.write_vocab(str(tmp_path), ['a person in the café'], num_merges=20)
  tok = ClipTokenizer.from_dir(str(tmp_path))
  assert tok(['a person in the cafÃ©'])[0].tolist() == tok(['a person in the café'])[0].tolist()


# Literal special tokens in several spellings and places; transformers splits on the
# exact ones before normalizing, anything else is text.
SPECIAL_CASES = ['a <|endoftext|> b', 'cat<|endoftext|><|endoftext|>mat', '!<|endoftext|>',
                 '<|endoftext|>!', '<|startoftext|>the cat', '<|ENDOFTEXT|> sat',
                 'x <| endoftext |>', '<|endoftext|', '<<|endoftext|>>', '<|startoftext|>',
                 'the mat <|endoftext|>' + ' word' * 80]
TEXTS = ['the cat sat on the mat.', "It's 12 O'CLOCK!!", 'crème brûlée in a café', '']


def test_openai_bpe_file_gives_the_same_ids(tmp_path):
  """OpenAI's bpe_simple_vocab_16e6.txt.gz and the Hugging Face files of the same
  vocabulary give the same ids, ours from either and transformers' from the latter."""
  size = clip_vocab.write_openai_bpe(str(tmp_path), TEXTS + SPECIAL_CASES, num_merges=60)
  from_gz = ClipTokenizer.from_dir(str(tmp_path))       # finds the .gz file
  from_hf = ClipTokenizer.from_dir(str(tmp_path / 'hf'))
  assert from_gz.vocab == from_hf.vocab and len(from_gz.vocab) == size > 2 * 256 + 2 + 30
  ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / 'hf'))
  texts = TEXTS + SPECIAL_CASES
  ids, mask = from_gz(texts)
  ids_hf, mask_hf = from_hf(texts)
  out = ref(texts, padding='max_length', max_length=77, truncation=True)
  np.testing.assert_array_equal(ids, ids_hf)
  np.testing.assert_array_equal(mask, mask_hf)
  for i, text in enumerate(texts):
    assert ids[i].tolist() == out['input_ids'][i], text
  np.testing.assert_array_equal(mask, np.asarray(out['attention_mask']))
  assert from_gz.encode('the cat')[0] == from_gz.vocab['the</w>']   # merges were used


def test_openai_bpe_keeps_clips_49408_token_vocabulary(tmp_path):
  """Like `clip.tokenize`, only the first 48,894 merges of a longer file are used."""
  path = tmp_path / clip_tokenizer.OPENAI_BPE
  syms = [chr(0x4e00 + i) for i in range(230)]                 # distinct 1-char symbols
  merges = [f'{a} {b}' for a in syms for b in syms][:50_000]
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + '\n'.join(merges) + '\n')
  tok = ClipTokenizer.from_openai_bpe(str(path))
  assert len(tok.vocab) == 49408 and len(tok.ranks) == 48894
  assert tok.vocab['<|startoftext|>'] == 49406 and tok.vocab['<|endoftext|>'] == 49407
  assert tok.vocab['!'] == 0 and tok.vocab['!</w>'] == 256   # printable bytes first
  (tmp_path / 'bad.txt.gz').write_bytes(b'not gzip')
  with pytest.raises(ValueError, match='not a gzip BPE merges file'):
    ClipTokenizer.from_openai_bpe(str(tmp_path / 'bad.txt.gz'))


def test_literal_special_tokens_match_transformers(tmp_path):
  clip_vocab.write_vocab(str(tmp_path), ['the cat sat on the mat end of text start'],
                         num_merges=30)
  ours = ClipTokenizer.from_dir(str(tmp_path))
  ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
  ids, mask = ours(SPECIAL_CASES)
  out = ref(SPECIAL_CASES, padding='max_length', max_length=77, truncation=True)
  for i, text in enumerate(SPECIAL_CASES):
    assert ids[i].tolist() == out['input_ids'][i], text
  np.testing.assert_array_equal(mask, np.asarray(out['attention_mask']))
  eos = ours.vocab['<|endoftext|>']
  assert ours.encode('a <|endoftext|> b').count(eos) == 1
  assert eos not in ours.encode('<|ENDOFTEXT|>')             # not the exact spelling
