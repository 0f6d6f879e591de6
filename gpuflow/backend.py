"""The one place that decides between the GPU (cupy + numba.cuda) and the CPU (numpy + numba njit).

Resolution order for :func:`get_backend`: the ``requested`` argument, then
``config_context(backend=...)`` / ``GPUFLOW_BACKEND=cpu|gpu``, then a cached probe
(cupy importable and a CUDA device present).  Asking for ``gpu`` when there is no
device raises :class:`~gpuflow.errors.BackendUnavailableError` naming what is
missing.  An automatic fallback to the CPU emits one
:class:`~gpuflow.errors.PerformanceWarning` per process.

With ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) a GPU request gives
the ``cuda-sim`` backend: numba.cuda kernels run in numba's simulator on numpy
arrays.  That is how CI, which has no GPU, runs every kernel's parity test.

No other module imports cupy or numba.cuda: kernel modules take ``cuda`` from here
(``from gpuflow.backend import cuda``), which also applies the numba-cuda fix for
numpy >= 2.5 (``numpy.row_stack`` was removed; numba-cuda 0.30 still calls it).
Importing this module touches no device.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal

import numpy as np

from gpuflow import config
from gpuflow.errors import BackendUnavailableError, PerformanceWarning

if TYPE_CHECKING:  # pragma: no cover
    import cupy  # noqa: F401

__all__ = ["Backend", "KernelPair", "Twins", "get_backend", "gpu_available", "simulator_enabled",
           "blocks_per_sm", "cuda_module", "describe_machine", "device_memory_total", "device_sm_count"]

_CUDA: ModuleType | None = None
_PROBE: tuple[bool, str] | None = None
_WARNED_FALLBACK = False


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is switched on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_module() -> ModuleType:
    """Import and return ``numba.cuda`` once, after the numpy>=2.5 compatibility fix."""
    global _CUDA
    if _CUDA is None:
        if not hasattr(np, "row_stack"):
            # numba-cuda 0.30.4 references numpy.row_stack, removed in numpy 2.5.
            np.row_stack = np.vstack  # type: ignore[attr-defined]
        from numba import cuda

        if simulator_enabled():
            _lock_simulator_shared_arrays()
        _CUDA = cuda
    return _CUDA


def _lock_simulator_shared_arrays() -> None:
    """Make the CUDA simulator's ``cuda.shared.array`` safe for the threads of a block.

    The simulator runs a block's threads as Python threads, and each thread's ``cuda.shared.array`` looks the
    array up by its source line and creates it when it is missing, without a lock: two threads that reach the
    line together can each create one, and the block's threads then exchange values through different arrays
    (seen here as rare wrong rows of kernels that stage data in shared memory, under parallel load; about 1 in 13
    blocks of 32 threads started together, ``tests/test_backend.py``).  The same lookup, done under a lock.
    Simulator only: a GPU never runs this.
    """
    import sys
    import threading

    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if getattr(shared, "_gpuflow_locked", False):
        return
    original = shared.array
    lock = threading.Lock()

    def array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> Any:
        if shape == 0 or alignment is not None:  # dynamic shared memory (one buffer) or the simulator's error
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)  # the caller's line names the allocation, as in the simulator
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    shared.array = array
    shared._gpuflow_locked = True


def __getattr__(name: str) -> Any:
    # ``from gpuflow.backend import cuda`` in kernel modules: numba.cuda, lazily.
    if name == "cuda":
        return cuda_module()
    msg = f"module 'gpuflow.backend' has no attribute {name!r}"
    raise AttributeError(msg)


def _probe() -> tuple[bool, str]:
    """Return (available, reason) for a real GPU; cached after the first call."""
    global _PROBE
    if _PROBE is None:
        if simulator_enabled():
            _PROBE = (False, "NUMBA_ENABLE_CUDASIM=1 is set (the CUDA simulator replaces the device)")
        else:
            try:
                import cupy
            except Exception as exc:  # ImportError or a broken CUDA install
                _PROBE = (False, f"cupy is not importable ({type(exc).__name__}: {exc}); "
                                 "install gpuflow[gpu]")
            else:
                try:
                    n = cupy.cuda.runtime.getDeviceCount()
                except Exception as exc:  # driver missing or failing
                    _PROBE = (False, f"no usable CUDA driver ({type(exc).__name__}: {exc})")
                else:
                    if n > 0:
                        if not cuda_module().is_available():
                            _PROBE = (False, "cupy sees a device but numba.cuda does not "
                                             "(install numba-cuda matching the driver)")
                        else:
                            _PROBE = (True, f"{n} CUDA device(s)")
                    else:
                        _PROBE = (False, "no CUDA device present")
    return _PROBE


def gpu_available() -> bool:
    """True when a real CUDA device can be used (cached probe)."""
    return _probe()[0]


class Twins:
    """Compile plain-Python scalar cores twice: as numba njit functions and as CUDA device functions.

    Kernel modules write each piece of logic once, as a plain Python function
    (no allocation, no ``cuda.*``), and register it here.  :meth:`cpu` and
    :meth:`cuda` then compile a kernel body against the matching set of cores:
    inside an njit twin a core name resolves to its njit version, inside a CUDA
    kernel to its device version.  This also works under the CUDA simulator,
    where a device function must be plain Python (an njit core cannot take the
    simulator's array objects).  A core given as ``(name, cpu_function,
    cuda_function)`` has a different body per target (e.g. a block barrier that
    has nothing to do on the CPU); both must take the same arguments.

    Examples
    --------
    >>> def add_one(x):
    ...     return x + 1
    >>> def body(a, out):
    ...     for i in range(a.size):
    ...         out[i] = add_one(a[i])
    >>> tw = Twins(add_one)
    >>> f = tw.cpu(body)
    >>> import numpy as np
    >>> o = np.zeros(2, np.int64); f(np.arange(2), o); o.tolist()
    [1, 2]
    """

    def __init__(self, *cores: Callable[..., Any] | tuple[Any, ...], inline: bool = False,
                 nrt: bool = True, forceinline: Iterable[str] = ()) -> None:
        from numba import njit

        if not cores:
            msg = "Twins needs at least one core function"
            raise ValueError(msg)
        cuda = cuda_module()
        opts: dict[str, Any] = {"inline": "always"} if inline else {}
        if not nrt:
            # cores that never allocate: without numba's runtime they skip the reference counting of
            # every array argument at every call (atomic increments that can dominate a hot loop)
            opts["_nrt"] = False
        # a core is a function, (name, function), or (name, cpu function, cuda function) where the two
        # targets need different code (e.g. a CUDA block barrier that has nothing to do on the CPU)
        items = [(c[0], c[1], c[-1]) if isinstance(c, tuple) else (c.__name__, c, c) for c in cores]
        # ``forceinline``: cores whose device versions NVVM must inline (the alwaysinline attribute). At a low
        # NVVM optimisation level even small cores can stay calls, and a call in a kernel's hot loop saves and
        # restores the caller's live registers through thread-local memory
        force = set(forceinline)
        unknown = force - {name for name, _, _ in items}
        if unknown:
            msg = f"Twins: forceinline names no core: {sorted(unknown)}"
            raise ValueError(msg)
        dev_inline = {} if simulator_enabled() else {"forceinline": True}
        # each core keeps its own module's globals; the compiled cores are visible to all of them by
        # name (numba resolves globals when it compiles, i.e. at the first call, after this loop)
        self._cpu_ns: dict[str, Any] = {}
        self._dev_ns: dict[str, Any] = {}
        gcs, gds = [], []
        for name, fc, fd in items:
            gc, gd = dict(fc.__globals__), dict(fd.__globals__)
            self._cpu_ns[name] = njit(**opts)(self._clone(fc, gc, name))
            self._dev_ns[name] = cuda.jit(device=True, **(dev_inline if name in force else {}))(
                self._clone(fd, gd, name))
            gcs.append(gc)
            gds.append(gd)
        for g in gcs:
            g.update(self._cpu_ns)
        for g in gds:
            g.update(self._dev_ns)
        self.cores = dict(self._cpu_ns)

    @staticmethod
    def _clone(f: Callable[..., Any], g: dict[str, Any], name: str | None = None) -> Callable[..., Any]:
        import types

        c = types.FunctionType(f.__code__, g, name or f.__name__, f.__defaults__, f.__closure__)
        c.__doc__ = f.__doc__
        c.__qualname__ = name or f.__qualname__
        c.__module__ = f.__module__
        return c

    def cpu(self, body: Callable[..., Any], **njit_options: Any) -> Callable[..., Any]:
        """Compile ``body`` with numba njit against the CPU versions of the cores."""
        from numba import njit

        return njit(**njit_options)(self._clone(body, dict(body.__globals__, **self._cpu_ns)))

    def cuda(self, body: Callable[..., Any], *, lto: bool | None = None, max_registers: int | None = None,
             **constants: Any) -> Callable[..., Any]:
        """Compile ``body`` as a CUDA kernel against the device versions of the cores.

        ``constants`` override module globals for this kernel only (compile-time
        constants such as a local array size).  ``lto``: link-time optimisation
        (None: numba-cuda's default, on wherever nvJitLink is installed).  With LTO,
        nvJitLink optimises the whole kernel again at link time at its own level,
        so :func:`nvvm_opt_level` only takes effect with ``lto=False``.  ``max_registers``: a cap on the
        registers per thread (None or 0: ptxas's choice).
        """
        opts: dict[str, Any] = {}
        if not simulator_enabled():
            if lto is not None:
                opts["lto"] = bool(lto)
            if max_registers:
                opts["max_registers"] = int(max_registers)
        # the function goes in the same call as the options: numba-cuda 0.30.4's ``jit(lto=...)(f)`` form
        # drops ``lto`` on its way to the dispatcher
        return cuda_module().jit(self._clone(body, dict(body.__globals__, **self._dev_ns, **constants)), **opts)


@dataclass(frozen=True)
class KernelPair:
    """A numba.cuda kernel and its numba njit CPU twin, with the same signature.

    Parameters
    ----------
    name : str
        Name used in errors and benchmarks.
    cuda : callable or None
        The ``@cuda.jit`` kernel.  It indexes work item ``i = cuda.grid(1)`` and
        must ignore ``i >= n``.
    cpu : callable
        The ``@njit`` twin: processes all ``n`` work items in one call.
    threads : int
        Threads per block for the CUDA launch (the launcher picks blocks from ``n``).
    per_block : bool
        When True, ``n`` counts blocks (one block per work item, e.g. a block-wide
        reduction per row) and the kernel strides over ``cuda.blockDim.x``.
    """

    name: str
    cuda: Callable[..., Any] | None
    cpu: Callable[..., Any]
    threads: int = 256
    per_block: bool = False
    #: NVVM optimisation level for the CUDA kernel's first compile (None: numba's default, 3).  Very large
    #: kernels compile many times faster at 1 (see :func:`nvvm_opt_level`).
    nvvm_opt: int | None = None
    #: False: NVVM may not contract a multiply and an add into one fused operation (rounded once), so the
    #: kernel's floating-point results equal its CPU twin's bit for bit (None: NVVM's default, contraction on)
    nvvm_fma: bool | None = None


#: NVVM compiles run under :func:`nvvm_opt_level`, by level (a check that the override took effect)
NVVM_OVERRIDES: dict[int, int] = {}


@contextlib.contextmanager
def nvvm_opt_level(level: int | None, fma: bool | None = None) -> Iterator[None]:
    """Compile CUDA kernels inside this block at NVVM optimisation level ``level`` (0-3; None: unchanged)
    and, when ``fma`` is given, with multiply-add contraction on or off.

    numba-cuda only offers -O3 (``opt=True``) or -O0.  The backtest engine's kernel, with every strategy
    core inlined, takes NVVM about 5 minutes at -O3 on the development VM (312 s; 7 s at -O1), while
    ptxas -O3 (always applied afterwards) gives both a similar register and stack footprint.  The kernel
    dispatcher compiles lazily at its first launch, so the launcher wraps that launch in this block.
    """
    if level is not None and not 0 <= int(level) <= 3:
        msg = f"NVVM optimisation level must be 0..3, got {level}"
        raise ValueError(msg)
    import sys

    from numba.cuda.cudadrv import nvvm  # noqa: F401 - makes sure the module is loaded

    # numba.cuda may be loaded under more than one module name (numba's numba.cuda shim and the
    # numba_cuda package): patch every loaded copy of the nvvm module
    mods = [m for name, m in list(sys.modules.items())
            if name.endswith("cuda.cudadrv.nvvm") and callable(getattr(m, "compile_ir", None))]
    origs = [m.compile_ir for m in mods]

    def make(orig: Callable[..., Any]) -> Callable[..., Any]:
        def compile_ir(llvmir: Any, **options: Any) -> Any:
            if level is not None:
                options["opt"] = int(level)
                NVVM_OVERRIDES[int(level)] = NVVM_OVERRIDES.get(int(level), 0) + 1
            if fma is not None:
                options["fma"] = bool(fma)
            return orig(llvmir, **options)
        return compile_ir

    for m, orig in zip(mods, origs):
        m.compile_ir = make(orig)
    try:
        yield
    finally:
        for m, orig in zip(mods, origs):
            m.compile_ir = orig


@dataclass(frozen=True)
class Backend:
    """A compute backend: array module, transfers and the kernel launcher.

    Attributes
    ----------
    name : {"gpu", "cuda-sim", "cpu"}
    xp : module
        ``cupy`` for ``gpu``, ``numpy`` otherwise.
    """

    name: Literal["gpu", "cuda-sim", "cpu"]
    xp: ModuleType = field(repr=False)

    @property
    def uses_cuda(self) -> bool:
        """True when kernels run through numba.cuda (device or simulator)."""
        return self.name != "cpu"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Return ``a`` as an array of this backend (host->device copy for ``gpu``)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_device(self, a: Any) -> Any:
        """Copy a host array to the device (no-op on cpu / cuda-sim)."""
        return self.xp.asarray(a)

    def to_host(self, a: Any) -> np.ndarray:
        """The one sanctioned device->host copy; numpy arrays pass through."""
        if self.name == "gpu" and not isinstance(a, np.ndarray):
            return a.get()
        return np.asarray(a)

    def empty(self, shape: Any, dtype: Any) -> Any:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> Any:
        return self.xp.zeros(shape, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        if self.name == "gpu":
            cuda_module().synchronize()

    def launch(self, pair: KernelPair, n: int, *args: Any, threads: int | None = None) -> None:
        """Run ``pair`` over ``n`` work items: its CUDA kernel on gpu/cuda-sim, else its CPU twin.

        The launcher, not the caller, chooses the launch geometry: ``threads`` per
        block (the pair's default unless given; small under the simulator, which
        runs every thread as a Python thread) and ``ceil(n / threads)`` blocks.
        """
        if n <= 0:
            return
        if self.name == "cpu" or pair.cuda is None:
            if self.name != "cpu":
                msg = f"kernel {pair.name!r} has no CUDA version; backend {self.name!r} cannot run it"
                raise BackendUnavailableError(msg)
            pair.cpu(*args)
            return
        tpb = int(threads or pair.threads)
        if not 1 <= tpb <= 1024:
            msg = f"kernel {pair.name!r}: {tpb} threads per block requested; CUDA allows 1..1024"
            raise ValueError(msg)
        if self.name == "cuda-sim":
            tpb = min(tpb, 32)
            # the simulator copies host arguments back after the launch: give it writable copies of
            # read-only inputs (e.g. zero-copy views of Arrow buffers); outputs are writable already
            args = tuple(np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a
                         for a in args)
        blocks = n if pair.per_block else (n + tpb - 1) // tpb
        custom = (pair.nvvm_opt is not None or pair.nvvm_fma is not None) and self.name == "gpu"
        with nvvm_opt_level(pair.nvvm_opt, pair.nvvm_fma) if custom else contextlib.nullcontext():
            pair.cuda[blocks, tpb](*args)


def _resolve_name(requested: str | None) -> str:
    name = requested if requested is not None else config.get_option("backend")
    if name is None:
        return "auto"
    name = str(name).lower()
    if name in ("cuda", "device"):
        name = "gpu"
    if name not in ("cpu", "gpu", "cuda-sim", "auto"):
        msg = f"Invalid backend {name!r}: expected 'cpu', 'gpu', 'cuda-sim' or None (auto)"
        raise BackendUnavailableError(msg)
    return name


def get_backend(requested: str | None = None) -> Backend:
    """Return the backend to use.

    Parameters
    ----------
    requested : {"cpu", "gpu", "cuda-sim", None}
        None means: the ``backend`` option (``GPUFLOW_BACKEND``), else the GPU if
        one is present, else the CPU with one PerformanceWarning.

    Raises
    ------
    BackendUnavailableError
        ``gpu`` was asked for and no device (or simulator) is available.
    """
    global _WARNED_FALLBACK
    name = _resolve_name(requested)
    if name == "cpu":
        return Backend("cpu", np)
    if name in ("gpu", "cuda-sim"):
        if simulator_enabled():
            return Backend("cuda-sim", np)
        if name == "cuda-sim":
            msg = "backend 'cuda-sim' needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
            raise BackendUnavailableError(msg)
        ok, why = _probe()
        if not ok:
            msg = (f"GPUFLOW_BACKEND/backend='gpu' was requested but no GPU is usable: {why}. "
                   "Use backend='cpu' (GPUFLOW_BACKEND=cpu) to run on the CPU.")
            raise BackendUnavailableError(msg)
        import cupy

        return Backend("gpu", cupy)
    # auto
    if simulator_enabled():
        return Backend("cuda-sim", np)
    ok, why = _probe()
    if ok:
        import cupy

        return Backend("gpu", cupy)
    if not _WARNED_FALLBACK:
        _WARNED_FALLBACK = True
        warnings.warn(f"gpuflow: no GPU ({why}); running on the CPU backend. "
                      "Set GPUFLOW_BACKEND=cpu to silence this.", PerformanceWarning, stacklevel=2)
    return Backend("cpu", np)


_SMS: int | None = None


def device_sm_count() -> int:
    """Streaming multiprocessors of the current CUDA device (cached; needs a real device)."""
    global _SMS
    if _SMS is None:
        try:
            import cupy

            _SMS = int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["multiProcessorCount"])
        except ImportError:  # numba alone
            _SMS = int(cuda_module().get_current_device().MULTIPROCESSOR_COUNT)
    return _SMS


def blocks_per_sm(registers: int, threads: int) -> int:
    """Blocks of ``threads`` a Hopper / Ampere SM holds at once when each thread takes ``registers`` (allocated
    in units of 8 per thread; 65,536 registers, 2,048 threads and 32 blocks per SM; shared memory aside)."""
    alloc = -(-max(int(registers), 1) // 8) * 8
    return max(1, min(32, 65_536 // (threads * alloc), 2_048 // threads))


def device_memory_total() -> int:
    """Bytes of memory of the current CUDA device (needs a real device)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[1])
    except ImportError:  # numba alone
        return int(cuda_module().current_context().get_memory_info()[1])


def describe_machine() -> dict[str, Any]:
    """Versions and hardware for benchmark reports: Python, numpy, numba, numba-cuda, cupy and the GPU.

    Touches the device only when cupy is importable (to read its name, memory and SM count).
    """
    import os
    import platform

    import numba

    v: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                         "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                         "numba_threads": numba.get_num_threads(), "cudasim": simulator_enabled()}
    try:
        import pyarrow

        v["pyarrow"] = pyarrow.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import cupy

        v["cupy"] = cupy.__version__
        p = cupy.cuda.runtime.getDeviceProperties(0)
        v["device"] = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        v["device_memory_gb"] = round(p["totalGlobalMem"] / 2**30, 1)
        v["sms"] = p["multiProcessorCount"]
    except Exception as exc:  # noqa: BLE001 - report whatever is missing
        v["cupy"] = f"unavailable: {type(exc).__name__}"
    try:
        import numba_cuda

        v["numba_cuda"] = numba_cuda.__version__
    except Exception as exc:  # noqa: BLE001
        v["numba_cuda"] = f"unavailable: {type(exc).__name__}"
    return v
