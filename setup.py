"""Builds the optional fused Adam kernels (adam_jax/fused/adam_kernel.cc, adam8_kernel.cc) during ``pip install``.

Everything else is declared in pyproject.toml. The kernel needs a C++17 compiler and the XLA FFI headers
that ship inside the ``jaxlib`` wheel (a build requirement). If either is missing the install still
succeeds, without the kernel, and adam_jax runs the composed chain in pure XLA
(``adam_jax.fused.status()`` says which).

The build is portable: no -march=native; the kernel picks AVX2+FMA or AVX-512 at run time on x86-64.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = [
    '-std=c++17',
    '-O3',
    '-fno-math-errno',  # lets sqrtf vectorise; without it the step is ~10x slower
    '-ffp-contract=off',  # no fused multiply-add but the ones written out: results stay bitwise the chain's
    '-fvisibility=hidden',
    '-w',  # the XLA headers warn under -Wall; our own code is checked with -Wall -Wextra in development
]


class BuildKernel(build_ext):
    """A C++ shared library, loaded with ctypes and registered through jax.ffi (not a Python module)."""

    def get_export_symbols(self, ext):
        return []

    def build_extension(self, ext):
        try:
            import jaxlib

            ext.include_dirs.append(os.path.join(os.path.dirname(jaxlib.__file__), 'include'))
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 - any failure leaves the pure-XLA path
            print(
                f'adam_jax: the fused kernel was not built ({error}); '
                'adam_jax will use the composed chain in pure XLA.',
                file=sys.stderr,
            )


setup(
    ext_modules=[
        Extension(
            'adam_jax.fused._adam_kernel',
            sources=['adam_jax/fused/adam_kernel.cc', 'adam_jax/fused/adam8_kernel.cc'],
            depends=['adam_jax/fused/kernel_common.h'],
            language='c++',
            extra_compile_args=FLAGS,
            optional=True,
        )
    ],
    cmdclass={'build_ext': BuildKernel},
)
