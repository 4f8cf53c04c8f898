"""Generated scenarios and configs through the command line: never a traceback.

Every input either runs (exit 0) or is rejected with exit code 2 and ONE line on stderr that
names the file and the line (``FILE:LINE:`` or tomllib's ``line N``), and for a value that
is wrong, the key or entry (``key 'budget'``, ``cgroup[2]``, ``policies[1]``).

The inputs mix well-formed documents with the values that broke the parsers before
(400-digit numbers, arrays nested ~900 deep, non-UTF-8 bytes, ``cgroup = [true]``,
``op = []``, ``..`` and NUL in paths, Unicode digits, nan/inf, policy specs that do not
load), and raw mutations of the text.

How many: ``OOMKIT_FUZZ_EXAMPLES`` per test (default 300, for CI); the acceptance run of
issue 14 used ``OOMKIT_FUZZ_EXAMPLES=1500`` (2 tests x 1500 = 3,000 inputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
from typing import Any

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from oomkit import cli
from oomkit.units import parse_duration_ns

EXAMPLES = int(os.environ.get("OOMKIT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# -- TOML text from Python values (tomllib reads, nothing in the stdlib writes) ---------------


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("?")  # a lone surrogate cannot be written as UTF-8
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dump_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(dump_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_string(k)} = {dump_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def dump_doc(doc: dict[str, Any]) -> str:
    """Top-level keys first, then [tables], then [[arrays of tables]] (TOML's order)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for k, v in doc.items():
        if isinstance(v, dict) and v.pop("__table__", False):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v) and any(
                e.get("__table__") for e in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_string(k)} = {dump_value(v)}")
    for k, t in tables:
        lines.append(f"[{_string(k)}]")
        lines.extend(f"{_string(a)} = {dump_value(b)}" for a, b in t.items())
    for k, entries in arrays:
        for e in entries:
            e.pop("__table__", None)
            lines.append(f"[[{_string(k)}]]")
            lines.extend(f"{_string(a)} = {dump_value(b)}" for a, b in e.items())
    return "\n".join(lines) + "\n"


# -- values -------------------------------------------------------------------------------------

NASTY = [
    int("9" * 400), -1, 0, 2**63, 2**64, float("nan"), float("inf"), -0.0, 1e308, True, False,
    "", " ", "max", "64M", "1G", "0", "1.5G", "9" * 400, "9" * 400 + "M", "١٢M", "１２M", "1e400s",
    "nan", "inf", "-1s", "0s", "1000h", "100ms", "2s", "5%", "nan%", "inf%", "١%", "49.9%",
    "/", "/a", "/a/b", "a", "/a/../b", "..", "/a/\x00b", "/a\nb", "//", "/a/", "/.", "x\x00",
    "127.0.0.1:0", "[::1]:0", "host:١٢", "host:99999999", ":", "\udcff",
    "largest_leaf", "largest_leaf@/a", "kill_cgroup", "psi:psi_declare", "oom:largest_leaf",
    "nosuch", "os:system", "json:JSONDecoder", "/etc/passwd:x", "x.py:Y", "a:b:c", "@", "\x00",
    [], [True], [[]], {}, {"a": 1}, [1, "a"],
]


def deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


scalars = st.one_of(
    st.sampled_from(NASTY),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
) | st.integers(1, 40).map(deep)


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a good value, sometimes anything."""
    return st.one_of(good, good, good, values)


def table(keys: dict[str, st.SearchStrategy[Any]], *, marker: bool = True
          ) -> st.SearchStrategy[dict[str, Any]]:
    base = st.fixed_dictionaries({}, optional={k: field(v) for k, v in keys.items()})
    extra = st.dictionaries(st.sampled_from(["x", "path ", "op", "1"]), values, max_size=1)

    def build(parts: tuple[dict[str, Any], dict[str, Any], bool]) -> dict[str, Any]:
        d, e, add = parts
        d = dict(d)
        if add:
            d.update(e)
        if marker:
            d["__table__"] = True
        return d

    return st.tuples(base, extra, st.booleans()).map(build)


sizes = st.sampled_from(["16M", "64M", "1G", "max", "0", "4096", "1.5M"])
durs = st.sampled_from(["100ms", "1s", "10ms", "0s", "2s"])
cg_paths = st.sampled_from(["/", "/a", "/a/b", "/b"])
steps = st.one_of(
    st.fixed_dictionaries({"op": st.just("alloc"), "size": sizes},
                          optional={"kind": st.sampled_from(["anon", "file", "shmem"]),
                                    "rate": st.sampled_from(["100M/s", "1G/s", "0/s"]),
                                    "path": st.sampled_from(["/f", "x", "/a/../b", "/t\x00"]),
                                    "mapped": st.booleans()}),
    st.fixed_dictionaries({"op": st.sampled_from(["work", "sleep"])},
                          optional={"duration": durs}),
    st.fixed_dictionaries({"op": st.sampled_from(["exit", "touch", "free"])},
                          optional={"size": sizes, "duration": durs}),
    st.dictionaries(st.sampled_from(["op", "size", "kind"]), values, max_size=3),
)

machine = table({
    "memory": st.sampled_from(["64M", "256M", "1G"]), "swap": sizes, "duration": durs,
    "seed": st.integers(0, 10), "tick": st.sampled_from(["10ms", "1ms", "100ms"]),
    "refault_stall": st.sampled_from(["all", "workingset"]), "cap_sys_resource": st.booleans(),
    "touch_rate": st.sampled_from(["1G/s", "4G/s"]), "readahead": st.sampled_from(["128K", "4K"]),
})
cgroup = table({"path": cg_paths, "memory.max": sizes, "memory.high": sizes,
                "memory.low": sizes, "memory.oom.group": st.booleans(),
                "create": durs, "remove": durs})
process = table({"name": st.sampled_from(["p", "q", "r"]), "cgroup": cg_paths,
                 "oom_score_adj": st.integers(-1000, 1000), "start": durs,
                 "program": st.lists(steps, max_size=3)})
scenario = st.fixed_dictionaries({}, optional={
    "machine": machine,
    "cgroup": st.one_of(st.lists(cgroup, max_size=3), values),
    "process": st.one_of(st.lists(process, max_size=3), values),
    "name": field(st.just("fuzz")),
    "policies": field(st.lists(st.sampled_from(
        ["largest_leaf", "largest_leaf@/a", "kill_cgroup@/a", "psi:psi_declare", "nosuch",
         "oom:largest_leaf@/nosuch", "os:getcwd", "x.py:Y"]), max_size=3)),
})

oom = table({"policy": st.sampled_from(["largest_leaf", "kill_cgroup", "nosuch", "os:getcwd",
                                        "tmpfs_cleanup"]),
             "cgroup": cg_paths, "budget": durs,
             "args": st.dictionaries(st.sampled_from(["paths", "x", "1a", "min_size"]), values,
                                     max_size=2)})
psi = table({"policy": st.sampled_from(["psi_declare", "thrash_guard", "largest_leaf"]),
             "budget": durs, "args": st.dictionaries(st.sampled_from(["x", "threshold_ms"]),
                                                     values, max_size=2)})
config = st.fixed_dictionaries({}, optional={
    "daemon": table({"dry_run": st.booleans(), "budget": durs,
                     "max_failures": st.integers(0, 5), "event_log": st.just("/tmp/x.jsonl"),
                     "event_log_max": sizes, "event_log_keep": st.integers(0, 5),
                     "status_file": st.sampled_from(["", "/tmp/s.json"]),
                     "state_file": st.just("/tmp/r.json"), "cgroup_root": st.just(""),
                     "mlock": st.booleans(), "gc_interval": durs}),
    "guard": table({"margin": st.sampled_from(["5%", "64M", "0%", "50%"])}),
    "metrics": table({"listen": st.sampled_from(["127.0.0.1:0", "", "[::1]:9727"])}),
    "oom": st.one_of(st.lists(oom, max_size=2), values),
    "psi": st.one_of(st.lists(psi, max_size=2), values),
})


def mutate(text: str, data: st.DataObject) -> bytes:
    """Sometimes the document as written, sometimes a few bytes changed."""
    raw = text.encode("utf-8", "surrogatepass")
    how = data.draw(st.sampled_from(["as-is", "as-is", "as-is", "insert", "cut", "bytes",
                                     "deep"]))
    if how == "insert" and raw:
        at = data.draw(st.integers(0, len(raw)))
        junk = data.draw(st.sampled_from([b"[", b"]", b"{", b"=", b'"', b"\n", b"#",
                                          b"\xff", b"\xc3", b"\x00", b"[[", b"'''"]))
        return raw[:at] + junk + raw[at:]
    if how == "cut" and raw:
        return raw[: data.draw(st.integers(0, len(raw)))]
    if how == "bytes":
        return data.draw(st.binary(max_size=60))
    if how == "deep":
        n = data.draw(st.integers(20, 1200))
        return raw + b"zz = " + b"[" * n + b"]" * n + b"\n"
    return raw


# -- the property -------------------------------------------------------------------------------

_LINE = re.compile(r":\d+: |line \d+")
_NAMED = re.compile(r"key '|\w\[\d+\]|\[\[\w+\]\] \d+|\[\w+\]|top level")


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv, out=io.StringIO())
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return rc, err.getvalue()


def check_outcome(path: str, rc: int, err: str) -> None:
    reason = re.sub(r"^oomkit: \S*?(:\d+)?: ", "", err)[:28]
    if currently_in_test_context():
        event(f"exit {rc}: {reason}" if rc else "exit 0")
    assert rc in (0, 2), f"exit {rc}: {err}"
    if rc == 0:
        return
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith(f"oomkit: {path}"), f"does not name the file: {err!r}"
    assert _LINE.search(err), f"does not name the line: {err!r}"
    syntax = ("not valid TOML" in err or "not UTF-8" in err or "nested deeper" in err
              or "not accepted" in err)
    assert syntax or _NAMED.search(err), f"names no key or entry: {err!r}"


def _short_sim(doc: dict[str, Any]) -> None:
    """A valid run is a real simulation: keep its simulated time short."""
    m = doc.get("machine")
    if isinstance(m, dict):
        try:
            if parse_duration_ns(m.get("duration", "20s")) > 2_000_000_000:
                m["duration"] = "1s"
        except ValueError:
            pass
    else:
        doc["machine"] = {"__table__": True, "duration": "1s"}


@FUZZ
@given(doc=scenario, data=st.data())
def test_scenarios_never_traceback(doc: dict[str, Any], data: st.DataObject) -> None:
    _short_sim(doc)
    raw = mutate(dump_doc(doc), data)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.toml")
        with open(path, "wb") as f:
            f.write(raw)
        rc, err = run_cli(["simulate", "--json", path])
        check_outcome(path, rc, err)


@FUZZ
@given(doc=config, data=st.data())
def test_configs_never_traceback(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = mutate(dump_doc(doc), data)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.toml")
        with open(path, "wb") as f:
            f.write(raw)
        rc, err = run_cli(["check-config", path])
        check_outcome(path, rc, err)


def test_known_faults_of_issue_14(tmp_path: Any) -> None:
    """The inputs the fault campaign found, each one line with file, line and key."""
    cases = {
        "memory400.toml": "[machine]\nmemory = " + "9" * 400 + "\n",
        "deep.toml": "[machine]\nx = " + "[" * 900 + "]" * 900 + "\n",
        "cg.toml": "cgroup = [true]\n",
        "op.toml": '[[process]]\nname = "p"\nprogram = [{op = []}]\n',
        "dots.toml": '[[process]]\nname = "p"\nprogram = [{op = "alloc", size = "1M", '
                     'path = "/a/../b"}]\n',
        "nul.toml": '[[cgroup]]\npath = "/a\\u0000b"\n',
        "digits.toml": '[machine]\nmemory = "\u0661\u0662M"\n',
        "pol.toml": 'name = "x"\npolicies = [\n  "largest_leaf",\n  "nosuch",\n]\n',
    }
    for name, text in cases.items():
        path = str(tmp_path / name)
        (tmp_path / name).write_text(text)
        rc, err = run_cli(["simulate", path])
        check_outcome(path, rc, err)
        assert rc == 2, name
    (tmp_path / "latin1.toml").write_bytes(b'[machine]\nname = "\xff"\n')
    rc, err = run_cli(["simulate", str(tmp_path / "latin1.toml")])
    assert rc == 2 and err.startswith(f"oomkit: {tmp_path / 'latin1.toml'}:2: not UTF-8")
    rc, err = run_cli(["simulate", str(tmp_path / "pol.toml")])
    assert "pol.toml:4: key 'policies[1]': unknown policy 'nosuch'" in err
    rc, err = run_cli(["simulate", str(tmp_path / "deep.toml")])
    assert "deep.toml:2: key 'x': arrays or tables nested deeper than 32" in err


def test_dump_round_trips() -> None:
    """The test's own TOML writer produces what tomllib reads back (else the fuzz lies)."""
    import tomllib

    doc = {"a": [1, "x\x00y", {"k": 1.5}], "t": {"__table__": True, "b": True},
           "arr": [{"__table__": True, "c": "d"}]}
    text = dump_doc(json.loads(json.dumps(doc)))
    assert tomllib.loads(text) == {"a": [1, "x\x00y", {"k": 1.5}], "t": {"b": True},
                                   "arr": [{"c": "d"}]}
