"""Extension table and OpenMP detection; all metadata lives in pyproject.toml.

Environment switches (read at build time):
  FASTSHALLOW_NO_OPENMP=1    build the kernels serially even where OpenMP works
  FASTSHALLOW_BOUNDSCHECK=1  compile Cython bounds/wraparound checks in (debug build for the tests)
  FASTSHALLOW_SANITIZE=address  build with AddressSanitizer (run Python with
                             LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
                             and ASAN_OPTIONS=detect_leaks=0; see README's development section)
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0 && omp_get_max_threads() > 0);
    return 0;
}
"""


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_works(cc):
    """Compile and run a tiny OpenMP program: a flag the compiler accepts is not enough."""
    tmp = tempfile.mkdtemp(prefix="fs-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(_PROBE)
        build = subprocess.run([cc, "-fopenmp", src, "-o", exe], capture_output=True)
        if build.returncode != 0:
            return False
        run = subprocess.run([exe], capture_output=True, text=True, timeout=30)
        return run.returncode == 0 and run.stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
use_openmp = not _flag("FASTSHALLOW_NO_OPENMP") and _openmp_works(cc)
boundscheck = _flag("FASTSHALLOW_BOUNDSCHECK")
sanitize = os.environ.get("FASTSHALLOW_SANITIZE", "").strip()

# -Wno-psabi: GCC notes that passing AVX-512 vectors changes the ABI; they never cross a call
# boundary between differently built objects here.  -g0 overrides Python's -g: the debug
# information was 6.3 MB of the 7.4 MB extension (a sanitizer build puts -g back, below).
compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi", "-g0"]
link_args = []
if use_openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
else:
    # Keep the `omp simd` vectorization hints without the runtime.
    compile_args.append("-fopenmp-simd")
if sanitize:
    compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
    link_args += [f"-fsanitize={sanitize}"]
print(f"fastshallow build: compiler={cc} openmp={use_openmp} boundscheck={boundscheck} "
      f"sanitize={sanitize or 'off'}", file=sys.stderr)


def _switches_changed(config):
    """True when the build switches differ from the previous build in this tree.  Then the C is
    regenerated (so it is newer than any extension built before), and build_ext recompiles:
    neither Cython nor build_ext sees a change of directives or flags by itself, and a tree built
    once would keep handing out that build (`--no-build-isolation`, `build_ext --inplace`)."""
    stamp = os.path.join("build", "fastshallow-switches.txt")
    try:
        with open(stamp) as f:
            if f.read() == config:
                return False
    except OSError:
        pass
    os.makedirs("build", exist_ok=True)
    with open(stamp, "w") as f:
        f.write(config)
    return True


directives = {
    "language_level": 3,
    "boundscheck": boundscheck,
    "wraparound": boundscheck,
    "initializedcheck": boundscheck,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        "fastshallow._kernels",
        ["src/fastshallow/_kernels.pyx"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        depends=[os.path.join("csrc", f) for f in sorted(os.listdir("csrc"))],
    ),
]

setup(ext_modules=cythonize(
    extensions, compiler_directives=directives,
    force=_switches_changed(f"{cc} openmp={use_openmp} sanitize={sanitize} {sorted(directives.items())}")))
