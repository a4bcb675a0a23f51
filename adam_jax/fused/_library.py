"""Finding, loading and registering the compiled kernel, or saying why it is not there.

The kernels are one shared library built from ``adam_kernel.cc`` and ``adam8_kernel.cc`` by ``pip install``
(see ``setup.py``). It is optional: without it (no compiler at install time, another OS, or
``ADAM_JAX_DISABLE_FUSED=1``) every fused optimizer runs its composed chain in pure XLA, with the same numbers.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import pathlib

TARGET = 'adam_jax_fused_adam'
TARGET_8BIT = 'adam_jax_fused_adam8'  # 8-bit block-wise moments (adam8_kernel.cc)
_LIBRARY_STEM = '_adam_kernel'
DISABLE_ENV = 'ADAM_JAX_DISABLE_FUSED'
# Caps the instruction set the x86-64 kernels choose at run time (read by the kernels when first called), so that
# the AVX2 loops can be tested on an AVX-512 CPU; both give the same numbers.
ISA_ENV = 'ADAM_JAX_FUSED_ISA'
ISA_CHOICES = ('avx512', 'avx2')


def library_path() -> pathlib.Path | None:
    """The built kernel next to this file (any extension-module suffix), or None."""
    here = pathlib.Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f'{_LIBRARY_STEM}{suffix}'
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _load() -> tuple[str | None, str]:
    """(isa, message): isa is None when the kernel cannot be used, and message says why."""
    if os.environ.get(DISABLE_ENV, '') not in ('', '0'):
        return None, f'fused kernel disabled by {DISABLE_ENV}; using the composed chain (pure XLA)'
    ceiling = os.environ.get(ISA_ENV, '')
    if ceiling not in ('', *ISA_CHOICES):
        raise ValueError(f'{ISA_ENV}={ceiling!r}: expected one of {", ".join(ISA_CHOICES)} (or unset for the best)')
    path = library_path()
    if path is None:
        return None, (
            'fused kernel not built (no C++ compiler at install time?); using the composed chain (pure XLA). '
            'Reinstall with g++ available: pip install -e .'
        )
    try:
        import jax

        library = ctypes.cdll.LoadLibrary(str(path))
        library.AdamJaxFusedIsa.restype = ctypes.c_char_p
        library.AdamJaxFused8Isa.restype = ctypes.c_char_p
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.AdamJaxFusedAdam), platform='cpu')
        jax.ffi.register_ffi_target(TARGET_8BIT, jax.ffi.pycapsule(library.AdamJaxFusedAdam8), platform='cpu')
        isa = library.AdamJaxFusedIsa().decode()
        isa_8bit = library.AdamJaxFused8Isa().decode()
    except (OSError, AttributeError, RuntimeError, ValueError) as error:
        return None, f'fused kernel at {path} failed to load ({error}); using the composed chain (pure XLA)'
    setting = f'; {ISA_ENV}={ceiling}' if ceiling else ''
    return isa, f'fused kernel loaded from {path.name} ({isa}; 8-bit: {isa_8bit}{setting})'


def available() -> bool:
    """Whether the fused CPU kernel is built and registered with XLA."""
    return _load()[0] is not None


def status() -> str:
    """One line: which path the fused optimizers take on CPU, and why."""
    return _load()[1]
