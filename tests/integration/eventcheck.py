"""eventcheck.py - check event log lines against docs/events.schema.json.

    from eventcheck import check_event_lines
    check_event_lines(relay.raw_log().splitlines())

check_event_lines() takes the lines of an event log (bytes or str, or
already-parsed dicts) and raises AssertionError naming every line that is
not UTF-8, not one JSON object, or not valid under the schema (JSON Schema
draft 2020-12, validated with python3-jsonschema; `scripts/install-deps.sh
test` installs it).  Errors are reported against the branch of the schema
for the line's own event, so they read "delivery: 'result' is a required
property", not "not valid under any of the given schemas".

Also a command: /usr/bin/python3 tests/integration/eventcheck.py LOG...
"""

import json
import sys
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "events.schema.json"
MAX_REPORTED = 20

_state = {}


def _load():
    """(schema, validator or None, {event name: oneOf index}) - cached."""
    if not _state:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        branches = {}
        for i, ref in enumerate(schema["oneOf"]):
            name = ref["$ref"].rsplit("/", 1)[1]
            branches[schema["$defs"][name]["properties"]["event"]["const"]] = i
        try:
            import jsonschema
            cls = jsonschema.Draft202012Validator
            cls.check_schema(schema)
            validator = cls(schema, format_checker=None)
        except ImportError:
            validator = None
        _state.update(schema=schema, validator=validator, branches=branches)
    return _state["schema"], _state["validator"], _state["branches"]


def _where(error):
    path = "/".join(str(p) for p in error.absolute_path)
    return ("%s: " % path if path else "") + error.message


def _schema_errors(validator, branches, obj):
    """Messages for obj: those of its own event's branch when it has one."""
    errors = list(validator.iter_errors(obj))
    out = []
    for e in errors:
        branch = branches.get(obj.get("event")) if isinstance(obj, dict) else None
        if e.validator == "oneOf" and branch is not None:
            sub = [c for c in e.context if c.relative_schema_path and
                   c.relative_schema_path[0] == branch]
            out.extend("%s: %s" % (obj["event"], _where(c)) for c in sub)
            if sub:
                continue
        if e.validator == "oneOf" and branch is None:
            out.append("unknown event %r (add it to %s)" % (obj.get("event"), SCHEMA_PATH.name))
            continue
        out.append(_where(e))
    return out


def _minimal_errors(schema, branches, obj):
    """Without jsonschema: the common members and a known event name only."""
    out = ["missing %r" % k for k in schema["required"] if k not in obj]
    if obj.get("event") not in branches:
        out.append("unknown event %r" % obj.get("event"))
    return out


def _parse(line):
    """(obj, None) or (None, error text)."""
    if isinstance(line, dict):
        return line, None
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, "not UTF-8 (%s)" % e
    try:
        obj = json.loads(line)
    except ValueError as e:
        return None, "not JSON (%s)" % e
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    return obj, None


def event_line_errors(lines):
    """[(line number, message)] for every problem in lines (1-based)."""
    schema, validator, branches = _load()
    lines = list(lines)
    problems = []
    for n, line in enumerate(lines, 1):
        if isinstance(line, (str, bytes)) and not line.strip():
            if n == len(lines):
                continue            # the empty string after the last newline
            problems.append((n, "empty line"))
            continue
        obj, err = _parse(line)
        if err is not None:
            problems.append((n, err))
            continue
        msgs = (_schema_errors(validator, branches, obj) if validator is not None
                else _minimal_errors(schema, branches, obj))
        problems.extend((n, m) for m in msgs)
    return problems


def check_event_lines(lines, name="event log"):
    """Raise AssertionError listing every invalid line; returns the count checked."""
    lines = list(lines)
    problems = event_line_errors(lines)
    if problems:
        shown = ["%s:%d: %s" % (name, n, m) for n, m in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            shown.append("... and %d more" % (len(problems) - MAX_REPORTED))
        raise AssertionError("event log does not match %s:\n%s"
                             % (SCHEMA_PATH.name, "\n".join(shown)))
    return len(lines)


def have_jsonschema():
    return _load()[1] is not None


def main(argv):
    rc = 0
    if not have_jsonschema():
        print("eventcheck: python3-jsonschema is not installed; only a minimal check runs",
              file=sys.stderr)
    for path in argv[1:]:
        try:
            n = check_event_lines(Path(path).read_bytes().split(b"\n"), path)
            print("%s: %d lines OK" % (path, n))
        except AssertionError as e:
            print(e, file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
