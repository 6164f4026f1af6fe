"""Reading YAML a user wrote: plain data only, small, every key a string and given once.

yaml.safe_load already builds no objects, but it accepts duplicate keys (the last silently
wins), non-string keys (`1: x`, `yes: x`) and aliases, whose expansion in an error message
made a 286-byte "billion laughs" file print 351 MB. Here each of those is a one-line error.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from vae_cli.errors import VaeError

MAX_BYTES = 1 << 20  # a config file is a few hundred bytes; 1 MiB is far beyond any real one


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(f"uses a YAML alias (*name) at line {mark.line + 1}: write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(f"uses a YAML merge key (<<) at line {line}: write the keys out")
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(
                    f"has a key that is not a name at line {line} ({type(key).__name__} {key!r}): "
                    f"quote it or fix the key"
                )
            if key in seen:
                raise _Refused(f'gives the key "{key}" twice (again at line {line}): keep one')
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Refused(Exception):
    pass


@functools.lru_cache(maxsize=16)
def _parse(text: str) -> Any:
    """Parsed once per text: the pure-Python loader takes ~15 ms for experiments.yaml, which
    every command, API call and sweep member reads again. Keyed by the text itself, so an
    edited file is always parsed anew (a timestamp could miss an edit within its tick)."""
    return yaml.load(text, Loader=_Loader)


def load(path: Path) -> Any:
    """The YAML document in `path` as plain Python data; any problem is a one-line VaeError."""
    path = Path(path)
    try:
        if path.is_dir():
            raise VaeError(f"config file {path} is a folder: pass a YAML file")
        if path.exists() and not path.is_file():  # /dev/zero, a pipe: reading could never end
            raise VaeError(f"config file {path} is not a regular file: pass a YAML file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise VaeError(f"{path} is {size} bytes, too large for a config file (at most {MAX_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VaeError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise VaeError(f"{path} is not a UTF-8 text file: pass a YAML file") from None
    except OSError as e:
        raise VaeError(f"cannot read config file {path} ({e.strerror}): check the path") from None
    try:
        return copy.deepcopy(_parse(text))  # a copy: callers may change what they get
    except _Refused as e:
        raise VaeError(f"{path} {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise VaeError(f"{path} is not valid YAML{at}: fix the syntax and retry") from None
    except RecursionError:
        raise VaeError(f"{path} is nested too deeply: a config file is one level of key: value") from None
