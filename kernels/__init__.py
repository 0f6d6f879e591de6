"""numba.cuda kernels and their numba njit CPU twins (imported as ``gpuflow.kernels``).

Each module holds, in this order: the scalar core (``@njit``, no allocation, no
``cuda.*``), ``<name>_cuda`` (``@cuda.jit``) and ``<name>_cpu`` (``@njit``), and
registers them as a :class:`gpuflow.backend.KernelPair`.  Public wrappers live in
``gpuflow.book`` and ``gpuflow.features``; they validate input and call
``Backend.launch``.
"""
