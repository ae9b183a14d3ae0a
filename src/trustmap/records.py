"""One way to store our own files: tensors in ``.safetensors``, everything else in a ``.json`` record.

Used by the zoo models (:mod:`trustmap.zoo.io`), attributions (:class:`trustmap.Attribution`, whose
arrays stay in ``.npz``: it uses the JSON half) and the TRUST localizer (fitted localizers and
training checkpoints). No pickle anywhere.

A record is a JSON object with a ``format`` string. When it goes with a weights file, the record
names that file (``weights_file``) and its sha256 (``weights_sha256``), and the record is written
*after* the weights: a reader that finds the record finds the weights it describes, and a file
changed or replaced afterwards is refused.

:func:`save_pair` / :func:`load_pair` store a record and its tensors beside each other under fixed
names. :func:`save_versioned` writes the weights under a name that carries their hash, then the
record that names them, then removes the weights the previous record named: the record is the one
switch, so a process killed between the writes leaves the previous pair intact and complete
(used for checkpoints, which must never resume from weights of one epoch and a record of another).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import _io
from .errors import InputError, RunDirError, TrustmapError

__all__ = ["pair_paths", "save_pair", "load_pair", "save_versioned", "load_versioned", "read_record",
           "read_weights_bytes", "check_output_path", "sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        The hex digest (64 characters).

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap.records import sha256_file
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.bin")
    >>> open(path, "wb").close()
    >>> sha256_file(path)[:16]
    'e3b0c44298fc1c14'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_path(path: str | os.PathLike, parameter: str = "path") -> None:
    """Refuse to write under ``path`` when one of its parents is a file (a typed error, not an OSError).

    Parameters
    ----------
    path : str or os.PathLike
        The path about to be written (need not exist).
    parameter : str, default "path"
        The argument name the error blames.

    Returns
    -------
    None

    Raises
    ------
    InputError
        The nearest existing parent of ``path`` is a file.

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap.records import check_output_path
    >>> d = tempfile.mkdtemp()
    >>> check_output_path(os.path.join(d, "new", "model.safetensors"))  # fine: nothing in the way
    >>> open(os.path.join(d, "afile"), "w").close()
    >>> check_output_path(os.path.join(d, "afile", "model.safetensors"))
    Traceback (most recent call last):
    ...
    trustmap.errors.InputError: ...
    """
    p = Path(path)
    for parent in [p.parent, *p.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError("cannot write under a file", parameter=parameter,
                                 expected="a path whose parent folders are folders", got=str(parent),
                                 fix="pass a path in a folder (or remove the file in the way)")
            break


def pair_paths(path: str | os.PathLike, default_name: str) -> tuple[Path, Path]:
    """``(x.safetensors, x.json)`` for ``path`` ending in ``.safetensors``; else a folder holding
    ``default_name.safetensors`` and ``default_name.json``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` file, or a folder.
    default_name : str
        The stem used inside a folder.

    Returns
    -------
    tuple of (Path, Path)
        The weights file and its ``.json`` record.

    Examples
    --------
    >>> from trustmap.records import pair_paths
    >>> [p.as_posix() for p in pair_paths("runs/m.safetensors", "model")]
    ['runs/m.safetensors', 'runs/m.json']
    >>> [p.as_posix() for p in pair_paths("runs", "model")]
    ['runs/model.safetensors', 'runs/model.json']
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / f"{default_name}.safetensors"
    return p, p.with_suffix(".json")


def read_record(json_path: str | os.PathLike, fmt: str, required: Sequence[str] = (), *,
                parameter: str = "path", error: type[TrustmapError] = RunDirError,
                what: str = "record") -> dict[str, Any]:
    """Read a JSON record, checking its ``format`` and that every key of ``required`` is there.

    Errors are ``error`` (a typed error) naming the file, and for a missing key the key.

    Parameters
    ----------
    json_path : str or os.PathLike
        The ``.json`` record.
    fmt : str
        The ``format`` the record must carry.
    required : sequence of str, default ()
        Keys the record must have.
    parameter : str, default "path"
        The argument name the typed error blames.
    error : type of TrustmapError, default RunDirError
        The typed error raised when the file is missing, foreign or corrupt.
    what : str, default "record"
        What the file is, in the error message ("checkpoint", "zoo model", ...).

    Returns
    -------
    dict
        The record.

    Raises
    ------
    RunDirError
        (or the given ``error``) The file is missing, unreadable, not JSON, of another ``format``
        or lacks a ``required`` key.

    Examples
    --------
    >>> import json, os, tempfile
    >>> from trustmap.records import read_record
    >>> path = os.path.join(tempfile.mkdtemp(), "rec.json")
    >>> with open(path, "w") as fh:
    ...     json.dump({"format": "demo-record/1", "n": 3}, fh)
    >>> read_record(path, "demo-record/1", ["n"])
    {'format': 'demo-record/1', 'n': 3}
    """
    json_path = Path(json_path)
    if not json_path.exists():
        raise error(f"the {what}'s .json record is missing", parameter=parameter,
                    expected=f"{json_path.name} (written with the {what})", got=str(json_path),
                    fix=f"write the {what} again")
    try:
        record = _io.read_json(json_path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"the {what}'s .json record is corrupt ({type(exc).__name__}: {exc})", parameter=parameter,
                    expected="the JSON trustmap wrote", got=str(json_path), fix=f"write the {what} again") from exc
    if not isinstance(record, dict) or record.get("format") != fmt:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise error(f"not a trustmap {what}", parameter=parameter, expected=f"a record with format {fmt!r}",
                    got=f"{got!r} in {json_path}", fix=f"pass a file written by trustmap ({what})")
    for key in required:
        if key not in record:
            raise error(f"the {what}'s record lacks the key {key!r}", parameter=parameter,
                        expected=f"a record with {', '.join(map(repr, required))}", got=f"{json_path} without {key!r}",
                        fix=f"write the {what} again with this trustmap version")
    return record


def _write_tensors(path: Path, tensors: Mapping[str, Any], metadata: dict | None) -> str:
    from safetensors.torch import save_file

    with _io.atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
    return digest


def read_weights_bytes(path: str | os.PathLike, record: dict, *, parameter: str = "path",
                       error: type[TrustmapError] = RunDirError, what: str = "file") -> bytes:
    """The bytes of the weights file ``path``, checked against the record's ``weights_sha256``.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file.
    record : dict
        Its record; a record without ``weights_sha256`` skips the check.
    parameter : str, default "path"
        The argument name the typed error blames.
    error : type of TrustmapError, default RunDirError
        The typed error raised when the file is missing, foreign or corrupt.
    what : str, default "file"
        What the file is, in the error message ("checkpoint", "zoo model", ...).

    Returns
    -------
    bytes
        The file's contents.

    Raises
    ------
    RunDirError
        (or the given ``error``) The file is missing, or its sha256 differs from the record's.

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> from trustmap.records import read_weights_bytes
    >>> path = os.path.join(tempfile.mkdtemp(), "w.bin")
    >>> with open(path, "wb") as fh:
    ...     _ = fh.write(b"abc")
    >>> read_weights_bytes(path, {"weights_sha256": hashlib.sha256(b"abc").hexdigest()})
    b'abc'
    """
    path = Path(path)
    if not path.exists():
        raise error(f"the {what}'s weights file is missing", parameter=parameter,
                    expected=f"{path.name} beside its .json record", got=str(path), fix=f"write the {what} again")
    data = path.read_bytes()
    want = record.get("weights_sha256")
    got = hashlib.sha256(data).hexdigest()
    if want is not None and got != want:
        raise error(f"the {what}'s weights do not match their record (sha256 differs): file changed or corrupt",
                    parameter=parameter, expected=f"sha256 {str(want)[:16]}...", got=f"{path} (sha256 {got[:16]}...)",
                    fix=f"write the {what} again, or restore the file")
    return data


def _read_tensors(path: Path, record: dict, *, parameter: str, error: type[TrustmapError], what: str) -> dict:
    from safetensors.torch import load as st_load

    data = read_weights_bytes(path, record, parameter=parameter, error=error, what=what)
    try:
        return st_load(data)
    except Exception as exc:
        raise error(f"the {what}'s weights file is corrupt ({type(exc).__name__}: {exc})", parameter=parameter,
                    got=str(path), fix=f"write the {what} again") from exc


def save_pair(st_path: str | os.PathLike, tensors: Mapping[str, Any], record: dict, *,
              metadata: dict | None = None, parameter: str = "path") -> Path:
    """Write ``tensors`` to ``st_path`` and ``record`` (+ ``weights_file``, ``weights_sha256``) to the
    ``.json`` beside it, each atomically, the record last.

    Parameters
    ----------
    st_path : str or os.PathLike
        The ``.safetensors`` file to write; the record goes to the same path with ``.json``.
    tensors : mapping of str to torch.Tensor
        The tensors (moved to the CPU and made contiguous before writing).
    record : dict
        The JSON record (copied; ``weights_file`` and ``weights_sha256`` are added).
    metadata : dict of str to str, optional
        The safetensors header's metadata.
    parameter : str, default "path"
        The argument name an error blames.

    Returns
    -------
    Path
        ``st_path``.

    Raises
    ------
    InputError
        A parent of ``st_path`` is a file.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from trustmap.records import load_pair, save_pair
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> _ = save_pair(path, {"w": torch.ones(2)}, {"format": "demo/1"})
    >>> record, tensors = load_pair(path, "demo/1")
    >>> record["weights_file"], tensors["w"].tolist()
    ('w.safetensors', [1.0, 1.0])
    """
    st_path = Path(st_path)
    check_output_path(st_path, parameter)
    record = dict(record)
    record["weights_file"] = st_path.name
    record["weights_sha256"] = _write_tensors(st_path, tensors, metadata)
    _io.write_json(st_path.with_suffix(".json"), record)
    return st_path


def load_pair(st_path: str | os.PathLike, fmt: str, required: Sequence[str] = (), *, parameter: str = "path",
              error: type[TrustmapError] = RunDirError, what: str = "file") -> tuple[dict, dict]:
    """``(record, tensors)`` written by :func:`save_pair`, checked (format, keys, sha256).

    Parameters
    ----------
    st_path : str or os.PathLike
        The ``.safetensors`` file; its record is the ``.json`` beside it.
    fmt : str
        The ``format`` the record must carry.
    required : sequence of str, default ()
        Keys the record must have.
    parameter : str, default "path"
        The argument name the typed error blames.
    error : type of TrustmapError, default RunDirError
        The typed error raised when the file is missing, foreign or corrupt.
    what : str, default "file"
        What the file is, in the error message ("checkpoint", "zoo model", ...).

    Returns
    -------
    tuple of (dict, dict of str to torch.Tensor)
        The record and the tensors.

    Raises
    ------
    RunDirError
        (or the given ``error``) The record or the weights are missing, foreign, changed or corrupt.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from trustmap.records import load_pair, save_pair
    >>> path = save_pair(os.path.join(tempfile.mkdtemp(), "w.safetensors"), {"b": torch.zeros(1)}, {"format": "demo/1"})
    >>> load_pair(path, "demo/1")[1]["b"].tolist()
    [0.0]
    """
    st_path = Path(st_path)
    record = read_record(st_path.with_suffix(".json"), fmt, required, parameter=parameter, error=error, what=what)
    return record, _read_tensors(st_path, record, parameter=parameter, error=error, what=what)


def save_versioned(json_path: str | os.PathLike, tensors: Mapping[str, Any], record: dict, *,
                   parameter: str = "path") -> Path:
    """Write the tensors as ``<stem>-<hash>.safetensors``, then the record naming them (the switch),
    then remove the weights the previous record named. A kill at any point leaves a complete pair.

    Parameters
    ----------
    json_path : str or os.PathLike
        The record to write (its folder is created); the weights go beside it.
    tensors : mapping of str to torch.Tensor
        The tensors.
    record : dict
        The JSON record (copied; ``weights_file`` and ``weights_sha256`` are added).
    parameter : str, default "path"
        The argument name an error blames.

    Returns
    -------
    Path
        ``json_path``.

    Raises
    ------
    InputError
        A parent of ``json_path`` is a file.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from trustmap.records import load_versioned, save_versioned
    >>> d = tempfile.mkdtemp()
    >>> path = save_versioned(os.path.join(d, "ckpt.json"), {"w": torch.ones(1)}, {"format": "demo/1", "epoch": 1})
    >>> path = save_versioned(path, {"w": torch.full((1,), 2.0)}, {"format": "demo/1", "epoch": 2})
    >>> len([f for f in os.listdir(d) if f.endswith(".safetensors")])  # the epoch-1 weights are gone
    1
    >>> record, tensors = load_versioned(path, "demo/1", ["epoch"])
    >>> record["epoch"], tensors["w"].tolist()
    (2, [2.0])
    """
    json_path = Path(json_path)
    check_output_path(json_path, parameter)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if json_path.exists():
        try:
            old = _io.read_json(json_path).get("weights_file")
        except Exception:
            old = None
    staging = json_path.with_name(f".{json_path.stem}-staging.safetensors")
    digest = _write_tensors(staging, tensors, None)
    name = f"{json_path.stem}-{digest[:16]}.safetensors"
    os.replace(staging, json_path.with_name(name))
    record = dict(record)
    record["weights_file"] = name
    record["weights_sha256"] = digest
    _io.write_json(json_path, record)
    if old and old != name and Path(old).name == old:
        try:
            (json_path.parent / old).unlink()
        except FileNotFoundError:
            pass
    return json_path


def load_versioned(json_path: str | os.PathLike, fmt: str, required: Sequence[str] = (), *,
                   parameter: str = "path", error: type[TrustmapError] = RunDirError,
                   what: str = "checkpoint") -> tuple[dict, dict]:
    """``(record, tensors)`` written by :func:`save_versioned`.

    Parameters
    ----------
    json_path : str or os.PathLike
        The record; the weights file it names must be in the same folder.
    fmt : str
        The ``format`` the record must carry.
    required : sequence of str, default ()
        Keys the record must have (besides ``weights_file``).
    parameter : str, default "path"
        The argument name the typed error blames.
    error : type of TrustmapError, default RunDirError
        The typed error raised when the file is missing, foreign or corrupt.
    what : str, default "checkpoint"
        What the file is, in the error message ("checkpoint", "zoo model", ...).

    Returns
    -------
    tuple of (dict, dict of str to torch.Tensor)
        The record and the tensors.

    Raises
    ------
    RunDirError
        (or the given ``error``) The record or the weights are missing, foreign, changed or corrupt,
        or the record names weights outside its folder.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from trustmap.records import load_versioned, save_versioned
    >>> path = save_versioned(os.path.join(tempfile.mkdtemp(), "c.json"), {"w": torch.ones(2)}, {"format": "demo/1"})
    >>> load_versioned(path, "demo/1")[1]["w"].tolist()
    [1.0, 1.0]
    """
    json_path = Path(json_path)
    record = read_record(json_path, fmt, ("weights_file", *required), parameter=parameter, error=error, what=what)
    name = str(record["weights_file"])
    if Path(name).name != name:
        raise error(f"the {what}'s record names weights outside its folder", parameter=parameter,
                    expected="a file name", got=name, fix=f"write the {what} again")
    return record, _read_tensors(json_path.parent / name, record, parameter=parameter, error=error, what=what)
