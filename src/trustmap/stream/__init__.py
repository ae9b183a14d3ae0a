"""Scale: streaming data files at constant memory, resumable incremental outputs, and Ray.

* :func:`open_source` reads ``.npy`` (memory-mapped), Parquet (row groups), HDF5 and CSV a block
  of rows at a time.
* :func:`stream_explain`, :func:`stream_evaluate` and :func:`stream_locate` run over a file chunk
  by chunk, write each chunk's results at once (``.npy`` written in place, or a Parquet folder),
  and resume after an interruption without recomputing finished chunks.
* :func:`stream_score` scores streamed explanations on a random sample of rows.
* :func:`read_maps` reads a streamed result back (``.npy`` memory-mapped).
* :func:`ray_explain` (``trustmap explain --engine ray``) runs the same work on a pool of Ray
  actors that load the model once and stay warm between calls (:func:`shutdown_ray_pool` ends
  them); :func:`choose_engine` (``--engine auto``) says whether Ray pays for a job.
"""

from .run import DEFAULT_CHUNK_ROWS, stream_evaluate, stream_explain, stream_locate, stream_score
from .sinks import SINK_FORMATS, StreamConflictError, open_sink, read_maps
from .sources import STREAM_FORMATS, Source, open_source

__all__ = ["open_source", "Source", "STREAM_FORMATS", "open_sink", "read_maps", "SINK_FORMATS",
           "StreamConflictError", "stream_explain", "stream_evaluate", "stream_locate", "stream_score",
           "DEFAULT_CHUNK_ROWS",
           "ray_explain", "shutdown_ray_pool", "choose_engine"]


def __getattr__(name):
    if name in ("ray_explain", "shutdown_ray_pool", "choose_engine"):
        from . import ray_engine

        return getattr(ray_engine, name)
    raise AttributeError(name)
