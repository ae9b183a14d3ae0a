"""One job pipeline: a :class:`Source` of samples, the work to do on them, a sink for the results.

``trustmap explain``, ``locate``, ``evaluate`` and ``demo`` (in memory, streamed and on Ray) are
the same job; the engines differ only in how the chunks of the source are scheduled:

* :func:`open_data` -- one :class:`~trustmap.stream.Source` for an array, a :class:`Dataset`, a
  built-in dataset or a data file of any format trustmap reads (in memory: a one-file,
  chunked :class:`ArraySource`; streamed: the file read a block of rows at a time), with labels
  (``labels=``), class names (``classes=``) and where the labels came from (``Source.labels_source``).
* :func:`parse_target` / :func:`targets_for` -- the one target parser (``None``/'predicted',
  'label', a class index, one per sample, or a file of them).
* :func:`parse_params` / :func:`make_explainers` -- method options (``METHOD.KEY=VALUE``) checked
  against each method's parameters.
* :func:`fill` -- the one chunk loop: every chunk a sink lacks is computed and written
  (:class:`MemorySink` in memory, the resumable ``.npy`` / Parquet sinks when streamed).
* :func:`new_record` / :data:`RUN_FORMAT` -- the one run record (``run.json``) every command writes.
* :mod:`trustmap.jobs.commands` -- the jobs themselves: :func:`explain`, :func:`locate`,
  :func:`evaluate`.
"""

from .data import ArraySource, open_data, parse_classes, read_labels
from .engine import MemorySink, fill, gather, progress_bar
from .params import make_explainers, method_names, parse_params
from .record import RUN_FORMAT, model_desc, new_record, write_samples
from .targets import parse_target, target_key, targets_for

__all__ = ["ArraySource", "open_data", "parse_classes", "read_labels", "MemorySink", "fill", "gather",
           "progress_bar", "make_explainers", "method_names", "parse_params", "RUN_FORMAT", "model_desc",
           "new_record", "write_samples", "parse_target", "target_key", "targets_for"]
