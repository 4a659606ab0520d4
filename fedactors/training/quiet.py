"""Import TensorFlow without its start-up banner burying a command's own output.

Shared by the command line (:mod:`fedactors.cli`) and the experiment commands
(:mod:`fedactors.experiments`).
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with their C++ start-up banner held back.

    TF 2.21 writes its oneDNN/CUDA lines to file descriptor 2 from C++, which
    ``TF_CPP_MIN_LOG_LEVEL`` no longer silences, burying the program's own
    output. The import runs with fd 2 pointed at a temporary file; what it
    wrote is shown only if the import fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.constant(0.0)  # device discovery prints the rest of the banner
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
