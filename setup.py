"""Install sgan_jax: `pip install -e '.[test]'`."""

import setuptools

setuptools.setup(
    name='sgan_jax',
    version='0.1.0',
    description=(
        'Stacked Generative Adversarial Networks (Huang et al., CVPR 2017) '
        'in JAX/Flax.'
    ),
    packages=setuptools.find_packages(include=['sgan_jax', 'sgan_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        # jax 0.11+ dropped Python 3.11; 0.10.2 is the newest there and the
        # code uses only APIs that still exist in 0.12.
        'jax>=0.10.2,<0.13',
        'flax>=0.12.8,<0.13',
        'optax>=0.2.8,<0.3',
        'orbax-checkpoint>=0.12.8,<0.13',
        'chex>=0.1.92,<0.2',
        'ml_collections>=1.1,<2',
        'clu>=0.0.12',
        # clu's metric writers import tensorboard, which tensorflow-cpu does
        # not pull in.
        'tensorboard>=2.21',
        # The CPU build keeps TF (only used for tfds/tf.data) off any GPU.
        'tensorflow-cpu>=2.21,<2.22',
        'tensorflow-datasets>=4.9.10,<4.10',
        'importlib_resources',
        'numpy',
        'pillow',
        'absl-py',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3'],
        # benchmarks/compare_torch.py only; the CPU build on this machine.
        'bench': ['torch==2.13.0'],
        # sgan_jax.convert_inception (reads pytorch-fid's .pth) and the
        # tests that check sgan_jax.inception against pytorch-fid's network.
        # torchvision's PyPI wheel is a CUDA build: only its Python model code
        # is used (tests/inception_test.py says how it imports on CPU torch).
        'inception_check': ['torch==2.13.0', 'torchvision==0.28.0',
                            'pytorch-fid==0.3.0'],
    },
)
