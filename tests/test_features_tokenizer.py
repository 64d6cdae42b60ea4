"""Our CLIP BPE tokenizer == transformers' CLIPTokenizer on real annotation queries."""
import glob
import json
import os

import numpy as np
import pytest
import transformers

from momentdiff_jax.features.clip_tokenizer import ClipTokenizer  # pylint: disable=g-import-not-at-top
from tests import clip_vocab  # pylint: disable=g-import-not-at-top

ANNOTATIONS = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data',
                           'annotations')
EDGE_CASES = ["It's 12 O'CLOCK!!  ok", '  tabs\tand\nnewlines  ', 'crème brûlée in a café',
              'person picks up bottle of water & drinks.', 'a' * 40, 'word ' * 100, '']


def _queries():
  files = sorted(glob.glob(os.path.join(ANNOTATIONS, '*', '*.jsonl')))
  if not files:
    pytest.skip(f'annotations not found under {ANNOTATIONS}')
  per_file = {}
  for path in files:
    with open(path, encoding='utf-8') as f:
      per_file[path] = [json.loads(line)['query'] for line in f if line.strip()]
  return per_file


def test_matches_transformers_clip_tokenizer(tmp_path):
  per_file = _queries()
  # vocabulary learned from every 25th query; tested on ~40 others per file (~600 total)
  train = [q for qs in per_file.values() for q in qs[::25]]
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


def test_tokenizer_json_and_missing_files(tmp_path):
  clip_vocab.write_vocab(str(tmp_path / 'a'), ['the cat sat on the mat'], num_merges=10)
  ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / 'a'))
  ref.backend_tokenizer.save(str(tmp_path / 'tokenizer.json'))
  ids, mask = ClipTokenizer.from_dir(str(tmp_path))(['The cat sat on the mat.'])
  expect = ref(['The cat sat on the mat.'], padding='max_length', max_length=77)
  assert ids.tolist() == expect['input_ids'] and mask.tolist() == expect['attention_mask']
  with pytest.raises(FileNotFoundError, match='vocab.json.*openai/clip-vit-base-patch32'):
    ClipTokenizer.from_dir(str(tmp_path / 'a' / 'nothing'))


def test_clean_repairs_mojibake_like_openai(tmp_path):
  """OpenAI's basic_clean: ftfy.fix_text, HTML entities unescaped twice, whitespace."""
  from momentdiff_jax.features.clip_tokenizer import clean  # pylint: disable=g-import-not-at-top
  assert clean('  Person opens the cafÃ©   door &amp;amp; LEAVES ') == \
      'person opens the café door & leaves'
  clip_vocab.write_vocab(str(tmp_path), ['a person in the café'], num_merges=20)
  tok = ClipTokenizer.from_dir(str(tmp_path))
  assert tok(['a person in the cafÃ©'])[0].tolist() == tok(['a person in the café'])[0].tolist()
