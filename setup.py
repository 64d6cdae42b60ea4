from setuptools import find_packages, setup

setup(
    name='momentdiff-jax',
    version='0.1.0',
    description='MomentDiff (diffusion-based video moment retrieval) in JAX/Flax',
    packages=find_packages(include=['momentdiff_jax', 'momentdiff_jax.*']),
    # The demo page's HTML, JS and CSS; the accuracy benchmark's annotation table
    # (CC BY-NC-SA 4.0, see its README).
    package_data={'momentdiff_jax.demo': ['static/*'], 'momentdiff_jax.data': ['tables/*']},
    python_requires='>=3.11',
    # Each command's `main(argv=None) -> int`; `python main.py`, `python evaluate.py`,
    # `python predict.py` and `python data_prep/*.py` call the same functions.
    entry_points={
        'console_scripts': [
            'momentdiff-train = momentdiff_jax.cli.train:main',
            'momentdiff-evaluate = momentdiff_jax.cli.evaluate:main',
            'momentdiff-predict = momentdiff_jax.cli.predict:main',
            'momentdiff-build = momentdiff_jax.cli.build:main',
            'momentdiff-extract = momentdiff_jax.cli.extract:main',
            'momentdiff-convert = momentdiff_jax.cli.convert:main',
            'momentdiff-antibias = momentdiff_jax.cli.antibias:main',
            'momentdiff-restore-qids = momentdiff_jax.cli.restore_qids:main',
            'momentdiff-summary = momentdiff_jax.summary:main',
            'momentdiff-demo = momentdiff_jax.cli.demo:main',
        ],
    },
    install_requires=[
        'jax>=0.6.0',
        'flax>=0.10.4',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11.0',
        'numpy>=1.26',
        'scipy>=1.11',
        'ml-collections>=1.0.0',
        'ml-dtypes>=0.4.0',
        'grain>=0.2.10',
        'absl-py>=2.0',
        'filelock>=3.0',   # JAX's lock on the shared persistent compilation cache
        'etils>=1.7',
        # clu's MetricWriter interface and periodic actions without TensorFlow (the
        # metrics.jsonl writer, train.py's log / validation / checkpoint triggers).
        'jax-loop-utils>=0.0.14',
        'tqdm>=4.66',
        'matplotlib>=3.8',
        'av>=12.0',
    ],
    extras_require={
        # Everything the tests import: torch, transformers and pytorchvideo are the
        # references of the parity tests (a plain lower bound; CPU-only machines install
        # torch's CPU wheel first, see README; .ci/run pins it exactly).
        'test': ['pytest>=8.0', 'pytest-xdist>=3.5', 'safetensors>=0.4', 'regex>=2023.0',
                 'ftfy>=6.0', 'torch>=2.1', 'transformers>=4.40', 'pytorchvideo>=0.1.5',
                 # The demo page and its browser test (Chromium from the system: .ci/run).
                 'fastapi>=0.110', 'uvicorn>=0.29', 'python-multipart>=0.0.9', 'pillow>=10.0',
                 'playwright>=1.40'],
        # The demo page (demo.py, momentdiff-demo): web server, uploads, thumbnails.
        'demo': ['fastapi>=0.110', 'uvicorn>=0.29', 'python-multipart>=0.0.9', 'pillow>=10.0'],
        # Backbones for feature extraction: safetensors weights, CLIP's tokenizer.
        'features': ['safetensors>=0.4', 'regex>=2023.0', 'ftfy>=6.0'],
        'cuda12': ['jax[cuda12]>=0.6.0'],
        'tpu': ['jax[tpu]>=0.6.0'],
        'torch': ['torch>=2.1'],
    },
)
